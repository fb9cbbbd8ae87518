"""The code location: assets, checks, sensor, rollback job and resources wired from environment."""

import dagster as dg

from notes_pipeline.assets.extract import crm_notes_raw
from notes_pipeline.assets.load import cdp_notes_loaded
from notes_pipeline.assets.normalize import normalized_notes
from notes_pipeline.assets.validate import validation_report
from notes_pipeline.jobs.rollback import rollback_cid
from notes_pipeline.resources.crm import PostgresCrmSource
from notes_pipeline.resources.identity import PostgresIdentityDirectory
from notes_pipeline.resources.mongo import CdpMongo
from notes_pipeline.resources.settings import MigrationSettings
from notes_pipeline.resources.storage import AttachmentStorage
from notes_pipeline.sensors.discovery import cid_discovery_sensor

migration_assets = [crm_notes_raw, normalized_notes, cdp_notes_loaded, validation_report]

migrate_cid = dg.define_asset_job(
    "migrate_cid",
    selection=dg.AssetSelection.assets(*migration_assets),
    description="All four assets (and their checks) for the selected CID partition(s).",
    executor_def=dg.in_process_executor,
)


def env_resources() -> dict[str, object]:
    """Resources configured from the environment (secrets only through EnvVar)."""
    return {
        "crm": PostgresCrmSource(dsn=dg.EnvVar("NOTES_PIPELINE_CRM_DSN")),
        "cdp_mongo": CdpMongo(
            uri=dg.EnvVar("NOTES_PIPELINE_MONGO_URI"),
            database=dg.EnvVar("NOTES_PIPELINE_MONGO_DB"),
        ),
        "attachment_storage": AttachmentStorage(
            bucket=dg.EnvVar("NOTES_PIPELINE_CDP_BUCKET"),
            endpoint_url=dg.EnvVar("NOTES_PIPELINE_S3_ENDPOINT_URL"),
        ),
        "identity": PostgresIdentityDirectory(dsn=dg.EnvVar("NOTES_PIPELINE_IDENTITY_DSN")),
        "settings": MigrationSettings(
            enabled_cids=dg.EnvVar("NOTES_PIPELINE_ENABLED_CIDS"),
            attachment_allowed_hosts=dg.EnvVar("NOTES_PIPELINE_ATTACHMENT_ALLOWED_HOSTS"),
            cdp_proxy_base_url=dg.EnvVar("NOTES_PIPELINE_CDP_PROXY_BASE_URL"),
        ),
    }


defs = dg.Definitions(
    assets=migration_assets,
    jobs=[migrate_cid, rollback_cid],
    sensors=[cid_discovery_sensor],
    resources=env_resources(),
    executor=dg.in_process_executor,
)
