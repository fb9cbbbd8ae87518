"""The activity-log family's Dagster definitions (SPEC-activity-logs §15): four assets, the
migrate, dry-run (Stage-0 probe) and rollback jobs, and the §9 alert sensor."""

import dagster as dg

from notes_pipeline.activity_logs.alerts import activity_log_alerts
from notes_pipeline.activity_logs.assets.extract import crm_audits_raw
from notes_pipeline.activity_logs.assets.load import cdp_activity_logs_loaded
from notes_pipeline.activity_logs.assets.normalize import normalized_activity_logs
from notes_pipeline.activity_logs.assets.validate import activity_log_validation_report
from notes_pipeline.activity_logs.rollback import rollback_activity_logs_cid
from notes_pipeline.core.alerts import report_alert_sensor
from notes_pipeline.core.status import StatusAssets

__all__ = [
    "STATUS_ASSETS",
    "activity_log_assets",
    "defs",
    "dry_run_activity_logs",
    "migrate_activity_logs_cid",
    "plan_assets",
]

#: the Stage-0 dry run's assets: probe + extraction and plan; they write nothing to CDP
plan_assets = [crm_audits_raw, normalized_activity_logs]
activity_log_assets = [*plan_assets, cdp_activity_logs_loaded, activity_log_validation_report]

#: where the family's monitor state is read from (``core.status``); the CDP-facing state is
#: the job document in crm_activity_log_migration_jobs (§6), written by the same assets
STATUS_ASSETS = StatusAssets(
    family="activity_logs",
    load=dg.AssetKey("cdp_activity_logs_loaded"),
    report=dg.AssetKey("activity_log_validation_report"),
)

migrate_activity_logs_cid = dg.define_asset_job(
    "migrate_activity_logs_cid",
    selection=dg.AssetSelection.assets(*activity_log_assets),
    description="All four activity-log assets (and their checks) for the selected CID "
    "partition(s): probe, plan, load under a job document, validation report.",
    executor_def=dg.in_process_executor,
)

dry_run_activity_logs = dg.define_asset_job(
    "dry_run_activity_logs",
    selection=dg.AssetSelection.assets(*plan_assets),
    description="Stage-0 dry run of the selected CID partition(s): probe, extraction and plan "
    "with their checks. Writes nothing to CDP (§15 probe_activity_logs_cid).",
    executor_def=dg.in_process_executor,
)

#: §9 alerts for each new activity_log_validation_report (needs the ``alerts`` resource)
activity_log_alert_sensor = report_alert_sensor(
    name="activity_logs_alerts", report=STATUS_ASSETS.report, rule=activity_log_alerts
)

defs = dg.Definitions(
    assets=activity_log_assets,
    jobs=[migrate_activity_logs_cid, dry_run_activity_logs, rollback_activity_logs_cid],
    sensors=[activity_log_alert_sensor],
)
