"""The code location: assets, checks, sensor, rollback job and resources wired from environment."""

import os

import dagster as dg

from notes_pipeline.contact_notes.assets.extract import crm_notes_raw
from notes_pipeline.contact_notes.assets.load import cdp_notes_loaded
from notes_pipeline.contact_notes.assets.normalize import normalized_notes
from notes_pipeline.contact_notes.assets.validate import validation_report
from notes_pipeline.contact_notes.rollback import rollback_cid
from notes_pipeline.core.discovery import cid_discovery_sensor
from notes_pipeline.core.resources.selection import resources_for_environment

migration_assets = [crm_notes_raw, normalized_notes, cdp_notes_loaded, validation_report]

migrate_cid = dg.define_asset_job(
    "migrate_cid",
    selection=dg.AssetSelection.assets(*migration_assets),
    description="All four assets (and their checks) for the selected CID partition(s).",
    executor_def=dg.in_process_executor,
)


def env_resources() -> dict[str, object]:
    """The resources this process's environment selects (``NOTES_PIPELINE_ENV`` and the
    per-resource variables; see ``notes_pipeline.core.resources.selection``). Raises
    ``ResourceSelectionError`` naming each required variable that is missing."""
    return resources_for_environment(os.environ)


defs = dg.Definitions(
    assets=migration_assets,
    jobs=[migrate_cid, rollback_cid],
    sensors=[cid_discovery_sensor],
    resources=env_resources(),
    executor=dg.in_process_executor,
)
