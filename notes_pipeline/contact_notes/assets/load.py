"""cdp_notes_loaded: copy attachments and upsert the CID's ready notes into CDP contact_notes."""

from collections import Counter
from collections.abc import Iterator

import dagster as dg

from notes_pipeline.contact_notes import reason_codes as rc
from notes_pipeline.contact_notes.checks import LOADED_CHECKS, loaded_checks
from notes_pipeline.contact_notes.load import NOT_ATTEMPTED, LoadContext, load_ready_notes
from notes_pipeline.contact_notes.records import LoadResult, NormalizedNotes
from notes_pipeline.core.partitions import ONE_CID_PER_RUN, cid_partitions
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.resources.settings import MigrationSettings
from notes_pipeline.core.resources.storage import AttachmentStorage


@dg.asset(
    partitions_def=cid_partitions,
    backfill_policy=ONE_CID_PER_RUN,
    group_name="notes_migration",
    kinds={"mongodb", "s3"},
    check_specs=LOADED_CHECKS,
    description="Writes the CID's ready notes to CDP (idempotent upserts) and re-hosts "
    "attachments. Refuses when the CID's crm_notes_migration_enabled flag is off.",
)
def cdp_notes_loaded(
    context: dg.AssetExecutionContext,
    normalized_notes: NormalizedNotes,
    cdp_mongo: CdpMongo,
    attachment_storage: AttachmentStorage,
    settings: MigrationSettings,
) -> Iterator[dg.Output[LoadResult] | dg.AssetCheckResult]:
    org = normalized_notes.org
    if not settings.is_enabled(org.cid):
        raise dg.Failure(
            description=f"{rc.FLAG_DISABLED}: crm_notes_migration_enabled is off for CID {org.cid}",
            metadata={"reason_code": rc.FLAG_DISABLED, "cid": org.cid},
        )
    index_mode = cdp_mongo.ensure_indexes()

    def report_progress(processed: int, total: int) -> None:
        context.log_event(
            dg.AssetObservation(
                asset_key=context.asset_key,
                partition=org.cid,
                metadata={"notes_processed": processed, "notes_total": total},
            )
        )

    ctx = LoadContext(
        org=org,
        mongo=cdp_mongo,
        storage=attachment_storage,
        downloader=attachment_storage.downloader(
            settings.allowed_hosts(),
            settings.attachment_max_bytes,
            settings.attachment_timeout_s,
            settings.attachment_deadline_s,
        ),
        batch_size=settings.batch_size,
        failure_threshold=settings.failure_threshold_pct / 100,
        attachment_workers=settings.attachment_workers,
        log=context.log,
        job_id=context.run.run_id,
        on_batch=report_progress,
    )
    result = load_ready_notes(ctx, normalized_notes.plans)
    outcomes = Counter(o.outcome for o in result.outcomes)
    planning_failures = Counter(p.reason_code for p in normalized_notes.failures)
    write_failures = Counter(o.reason_code for o in result.outcomes if o.outcome == rc.FAILED)
    metadata = {
        "status": result.status,
        "migrated": outcomes[rc.MIGRATED],
        "skipped": outcomes[rc.SKIPPED],
        "failed": len(normalized_notes.failures) + outcomes[rc.FAILED],
        "failed_by_reason": dg.MetadataValue.json(dict(planning_failures + write_failures)),
        "out_of_scope": normalized_notes.count(rc.OUT_OF_SCOPE),
        "not_attempted": outcomes[NOT_ATTEMPTED],
        "source_total": len(normalized_notes.plans),
        "load_failure_rate_pct": round(result.load_failure_rate * 100, 3),
        "attachments_planned": result.attachments_planned,
        "attachments_copied": result.attachments_copied,
        "attachments_failed": len(result.attachment_failures),
        "attachments_failed_by_reason": dg.MetadataValue.json(
            dict(Counter(f.reason_code for f in result.attachment_failures))
        ),
        "owners_unresolved": sum(
            1 for p in normalized_notes.plans if p.outcome == rc.READY and not p.owner_resolved
        ),
        "checkins_dropped": sum(
            1 for p in normalized_notes.plans if p.outcome == rc.READY and p.checkin_dropped
        ),
        "batches": result.batches,
        "duration_seconds": round(result.duration_seconds, 3),
        "index_mode": index_mode,
    }
    yield dg.Output(result, metadata=metadata)
    yield from loaded_checks(result, settings)
