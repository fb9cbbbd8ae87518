"""The contact-notes family's Dagster definitions: four assets, the migrate and rollback jobs,
the all-CIDs overview and the PRD §12 alert sensor."""

import dagster as dg

from notes_pipeline.contact_notes.alerts import notes_alerts
from notes_pipeline.contact_notes.assets.extract import crm_notes_raw
from notes_pipeline.contact_notes.assets.load import cdp_notes_loaded
from notes_pipeline.contact_notes.assets.normalize import normalized_notes
from notes_pipeline.contact_notes.assets.overview import migration_overview
from notes_pipeline.contact_notes.assets.validate import validation_report
from notes_pipeline.contact_notes.monitor import STATUS_ASSETS
from notes_pipeline.contact_notes.rollback import rollback_cid
from notes_pipeline.core.alerts import report_alert_sensor

__all__ = ["STATUS_ASSETS", "defs", "migrate_cid", "migration_assets", "notes_alert_sensor"]

migration_assets = [crm_notes_raw, normalized_notes, cdp_notes_loaded, validation_report]

migrate_cid = dg.define_asset_job(
    "migrate_cid",
    selection=dg.AssetSelection.assets(*migration_assets),
    description="All four assets (and their checks) for the selected CID partition(s).",
    executor_def=dg.in_process_executor,
)

#: PRD §12 alerts for each new validation_report (needs the ``alerts`` resource)
notes_alert_sensor = report_alert_sensor(
    name="contact_notes_alerts", report=STATUS_ASSETS.report, rule=notes_alerts
)

defs = dg.Definitions(
    assets=[*migration_assets, migration_overview],
    jobs=[migrate_cid, rollback_cid],
    sensors=[notes_alert_sensor],
)
