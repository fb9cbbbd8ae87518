"""The contact-notes family's Dagster definitions: four assets, the migrate and rollback jobs."""

import dagster as dg

from notes_pipeline.contact_notes.assets.extract import crm_notes_raw
from notes_pipeline.contact_notes.assets.load import cdp_notes_loaded
from notes_pipeline.contact_notes.assets.normalize import normalized_notes
from notes_pipeline.contact_notes.assets.validate import validation_report
from notes_pipeline.contact_notes.rollback import rollback_cid
from notes_pipeline.core.status import StatusAssets

migration_assets = [crm_notes_raw, normalized_notes, cdp_notes_loaded, validation_report]

#: where the family's monitor state is read from (``core.status``)
STATUS_ASSETS = StatusAssets(
    family="contact_notes",
    load=dg.AssetKey("cdp_notes_loaded"),
    report=dg.AssetKey("validation_report"),
)

migrate_cid = dg.define_asset_job(
    "migrate_cid",
    selection=dg.AssetSelection.assets(*migration_assets),
    description="All four assets (and their checks) for the selected CID partition(s).",
    executor_def=dg.in_process_executor,
)

defs = dg.Definitions(assets=migration_assets, jobs=[migrate_cid, rollback_cid])
