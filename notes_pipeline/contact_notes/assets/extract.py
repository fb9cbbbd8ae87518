"""crm_notes_raw: one CID's CRM notes with attachment refs, check-in flag and creator info."""

from collections import Counter

import dagster as dg

from notes_pipeline.contact_notes import events
from notes_pipeline.contact_notes.records import CrmExtract
from notes_pipeline.contact_notes.settings import MigrationSettings
from notes_pipeline.core.partitions import ONE_CID_PER_RUN, cid_partitions
from notes_pipeline.core.resources.crm import CrmSource


@dg.asset(
    partitions_def=cid_partitions,
    backfill_policy=ONE_CID_PER_RUN,
    group_name="notes_migration",
    kinds={"postgres"},
    description="The CID's CRM notes (all kinds), keyset-paginated from the read-only CRM source.",
)
def crm_notes_raw(
    context: dg.AssetExecutionContext, crm: CrmSource, settings: MigrationSettings
) -> dg.Output[CrmExtract]:
    """``CrmExtract`` of the partition's CID (every note, any kind, in id order).

    Raises ``LookupError`` for an unknown CID and ``CrmExtractError`` (CRM_EXTRACT_FAILED)
    when the CRM cannot be read; a row that cannot be converted becomes NOTE_EXTRACT_ERROR.
    """
    cid = context.partition_key
    events.emit(
        context.log,
        events.STARTED,
        job_id=context.run.run_id,
        cid=cid,
        triggered_by=events.trigger_label(context.run.tags),
    )
    org = crm.get_organization(cid)
    notes = tuple(note for page in crm.iter_note_pages(cid, settings.batch_size) for note in page)
    kinds = Counter(att.kind for note in notes for att in note.attachments)
    metadata = {
        "total": len(notes),
        "person_notes": sum(1 for n in notes if n.crm_person_id is not None),
        "by_note_type": dg.MetadataValue.json(
            {
                str(k): v
                for k, v in sorted(
                    Counter(n.crm_note_type_id for n in notes).items(), key=lambda kv: str(kv[0])
                )
            }
        ),
        "by_fk_shape": dg.MetadataValue.json(dict(Counter(n.fk_shape for n in notes))),
        "attachments_by_kind": dg.MetadataValue.json(dict(kinds)),
        "notes_with_checkin": sum(1 for n in notes if n.has_checkin),
        "company_sso_id": org.company_sso_id,
    }
    return dg.Output(CrmExtract(org=org, notes=notes), metadata=metadata)
