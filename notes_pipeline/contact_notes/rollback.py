"""Rollback of one CID: delete only its migrated notes and their copied attachments."""

import re

import dagster as dg

from notes_pipeline.core.chunks import remove_chunks
from notes_pipeline.core.resources.crm import CrmSource
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.resources.storage import AttachmentStorage
from notes_pipeline.core.rollback import RollbackConfig, require_confirmation
from notes_pipeline.core.run_metadata import RollbackSummary

MIGRATED_OBJECT = re.compile(r"^[ad]\d+-")


def migrated_attachment_keys(keys: list[str], legacy_note_ids: set[str]) -> list[str]:
    """Keys the migration wrote: `{company}/{legacy_crm_note_id}/{a|d}{asset id}-{file}` only."""
    selected = []
    for key in keys:
        parts = key.split("/")
        if len(parts) == 3 and parts[1] in legacy_note_ids and MIGRATED_OBJECT.match(parts[2]):
            selected.append(key)
    return selected


@dg.op(description="Deletes the CID's migrated notes (legacy marker only) and copied attachments.")
def rollback_cid_op(
    context: dg.OpExecutionContext,
    config: RollbackConfig,
    crm: CrmSource,
    cdp_mongo: CdpMongo,
    attachment_storage: AttachmentStorage,
) -> dg.Output[dict]:
    """Delete the CID's migrated notes and copied attachments; observe ``rolled_back``.

    Raises ``dg.Failure`` without the confirmation phrase (nothing deleted).
    """
    require_confirmation(config)
    org = crm.get_organization(config.cid)
    notes_deleted = cdp_mongo.delete_migrated(org.company_sso_id)
    note_ids = {str(n.id) for page in crm.iter_note_pages(org.cid, 1000) for n in page}
    keys = migrated_attachment_keys(
        attachment_storage.list_keys(f"{org.company_sso_id}/"), note_ids
    )
    attachments_deleted = attachment_storage.delete_keys(keys)
    # the intermediates (CRM notes and plans, which hold content) go with the rollback
    chunk_runs = remove_chunks(
        context.instance.storage_directory(), org.cid, ["crm_notes_raw", "normalized_notes"]
    )
    summary = RollbackSummary(
        cid=org.cid,
        records_removed=notes_deleted,
        removed_by_kind={
            "notes_deleted": notes_deleted,
            "attachments_deleted": attachments_deleted,
            "chunk_runs_removed": chunk_runs,
        },
    )
    context.log_event(
        dg.AssetObservation(
            asset_key="validation_report", partition=org.cid, metadata=summary.to_metadata()
        )
    )
    removed = {"cid": org.cid, **summary.removed_by_kind}
    context.log.info(f"rolled back CID {org.cid}: {removed}")
    return dg.Output(removed, metadata=removed)


@dg.job(description="Roll back one CID (requires confirm: 'ROLLBACK <cid>' in run config).")
def rollback_cid():
    """Roll back one CID (run config: ``cid`` and ``confirm``)."""
    rollback_cid_op()
