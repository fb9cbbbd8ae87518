"""The activity-log family's Dagster definitions, part 1 (SPEC-activity-logs §15): the probe
and plan assets and the dry-run job Ops review a CID with before anything is written."""

import dagster as dg

from notes_pipeline.activity_logs.assets.extract import crm_audits_raw
from notes_pipeline.activity_logs.assets.normalize import normalized_activity_logs
from notes_pipeline.core.status import StatusAssets

activity_log_assets = [crm_audits_raw, normalized_activity_logs]

#: where the family's monitor state is read from (``core.status``). Part 1 writes nothing, so
#: both point at the plan's assets and a CID stays ``not_started``; part 2 (#13) moves them to
#: the load and report assets (the seed's status comes from the jobs collection, §6).
STATUS_ASSETS = StatusAssets(
    family="activity_logs",
    load=dg.AssetKey("crm_audits_raw"),
    report=dg.AssetKey("normalized_activity_logs"),
)

dry_run_activity_logs = dg.define_asset_job(
    "dry_run_activity_logs",
    selection=dg.AssetSelection.assets(*activity_log_assets),
    description="Stage-0 dry run of the selected CID partition(s): probe, extraction and plan "
    "with their checks. Writes nothing to CDP (§15 probe_activity_logs_cid).",
    executor_def=dg.in_process_executor,
)

defs = dg.Definitions(assets=activity_log_assets, jobs=[dry_run_activity_logs])
