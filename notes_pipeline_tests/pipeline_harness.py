"""Runs the four assets (and their checks) for one CID against the local stack."""

from __future__ import annotations

import os

import dagster as dg
from crm_fixtures import FixtureOrg
from pymongo import IndexModel, MongoClient

from notes_pipeline.contact_notes.definitions import migration_assets
from notes_pipeline.contact_notes.settings import MigrationSettings
from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.resources.crm import PostgresCrmSource
from notes_pipeline.core.resources.identity import HttpIdentityDirectory
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.resources.storage import AttachmentStorage
from notes_pipeline.core.status import FORCE_RERUN_TAG


def cdp_db():
    return MongoClient(os.environ["NOTES_PIPELINE_MONGO_URI"])[
        os.environ["NOTES_PIPELINE_MONGO_DB"]
    ]


def stack_resources(
    *, mongo: CdpMongo | None = None, storage: AttachmentStorage | None = None, **settings
) -> dict[str, object]:
    """The stack's resources with plain values (``settings`` override MigrationSettings
    fields). Identity is the production client, ``HttpIdentityDirectory``, against the
    stack's identity-service stand-in (``NOTES_PIPELINE_IDENTITY_URL``/``_TOKEN``)."""
    settings.setdefault("enabled_cids", "*")
    settings.setdefault(
        "attachment_allowed_hosts", os.environ["NOTES_PIPELINE_ATTACHMENT_ALLOWED_HOSTS"]
    )
    settings.setdefault("cdp_proxy_base_url", os.environ["NOTES_PIPELINE_CDP_PROXY_BASE_URL"])
    return {
        "crm": PostgresCrmSource(dsn=os.environ["NOTES_PIPELINE_CRM_DSN"]),
        "cdp_mongo": mongo
        or CdpMongo(
            uri=os.environ["NOTES_PIPELINE_MONGO_URI"],
            database=os.environ["NOTES_PIPELINE_MONGO_DB"],
        ),
        "attachment_storage": storage
        or AttachmentStorage(
            bucket=os.environ["NOTES_PIPELINE_CDP_BUCKET"],
            endpoint_url=os.environ["NOTES_PIPELINE_S3_ENDPOINT_URL"],
        ),
        "identity": HttpIdentityDirectory(
            root_url=os.environ["NOTES_PIPELINE_IDENTITY_URL"],
            auth_token=os.environ.get("NOTES_PIPELINE_IDENTITY_TOKEN") or None,
        ),
        "settings": MigrationSettings(**settings),
    }


def run_cid(
    cid: str,
    resources: dict[str, object],
    *,
    instance: dg.DagsterInstance | None = None,
    raise_on_error: bool = True,
    force_rerun: bool = False,
) -> dg.ExecuteInProcessResult:
    """The four assets for ``cid``; ``force_rerun`` adds the run tag that lets a
    completed_success CID load again (else its load refuses with ALREADY_MIGRATED)."""
    instance = instance or dg.DagsterInstance.get()
    if cid not in instance.get_dynamic_partitions(cid_partitions.name):
        instance.add_dynamic_partitions(cid_partitions.name, [cid])
    return dg.materialize(
        migration_assets,
        partition_key=cid,
        resources=resources,
        instance=instance,
        raise_on_error=raise_on_error,
        tags={FORCE_RERUN_TAG: "true"} if force_rerun else None,
    )


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    events = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in events[-1].metadata.items()} if events else {}


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def block_writes(db, org: FixtureOrg, note_ids: list[int]) -> None:
    """A real server-side write error: an extra unique index the notes' upserts collide with."""
    db.contact_notes.create_indexes(
        [IndexModel([("blocker_key", 1)], name="test_blocker", unique=True, sparse=True)]
    )
    db.contact_notes.insert_many(
        [{"company_sso_id": org.company_sso_id, "blocker_key": f"{org.cid}-{i}"} for i in note_ids]
    )


class BlockingMongo(CdpMongo):
    """Adds `blocker_key` to chosen notes so the server rejects them (unique violation)."""

    blocked: list[str] = []

    def upsert_notes(self, company_sso_id, documents, **kwargs):
        docs = [
            dict(d, blocker_key=f"{d['company_sso_id'].split('-')[1]}-{d['legacy_crm_note_id']}")
            if d["legacy_crm_note_id"] in self.blocked
            else d
            for d in documents
        ]
        return super().upsert_notes(company_sso_id, docs, **kwargs)
