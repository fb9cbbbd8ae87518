"""crm_notes_raw: one CID's CRM notes with attachment refs, check-in flag and creator info."""

from collections import Counter

import dagster as dg

from notes_pipeline.contact_notes import events
from notes_pipeline.contact_notes.records import CrmExtract
from notes_pipeline.contact_notes.settings import MigrationSettings
from notes_pipeline.core.chunks import ChunkWriter
from notes_pipeline.core.crm_records import CrmNote
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
    """``CrmExtract`` of the partition's CID (every note, any kind, in id order); its
    ``notes`` are a ``ChunkedRecords[CrmNote]`` handle (``settings.chunk_size`` notes per
    chunk under the instance's storage directory), so memory is one CRM page, not the CID.

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
    total = person_notes = with_checkin = 0
    by_type: Counter = Counter()
    by_shape: Counter = Counter()
    kinds: Counter = Counter()
    with ChunkWriter[CrmNote].for_asset(context, settings.chunk_size) as writer:
        for page in crm.iter_note_pages(cid, settings.batch_size):
            writer.append(page)  # one CRM page in memory at a time
            for note in page:
                total += 1
                person_notes += note.crm_person_id is not None
                with_checkin += bool(note.has_checkin)
                by_type[note.crm_note_type_id] += 1
                by_shape[note.fk_shape] += 1
                kinds.update(att.kind for att in note.attachments)
        notes = writer.close()
    metadata = {
        "total": total,
        "person_notes": person_notes,
        "by_note_type": dg.MetadataValue.json(
            {str(k): v for k, v in sorted(by_type.items(), key=lambda kv: str(kv[0]))}
        ),
        "by_fk_shape": dg.MetadataValue.json(dict(by_shape)),
        "attachments_by_kind": dg.MetadataValue.json(dict(kinds)),
        "notes_with_checkin": with_checkin,
        "company_sso_id": org.company_sso_id,
        "chunks": notes.chunk_count,
    }
    return dg.Output(CrmExtract(org=org, notes=notes), metadata=metadata)
