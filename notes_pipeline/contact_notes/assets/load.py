"""cdp_notes_loaded: copy attachments and upsert the CID's ready notes into CDP contact_notes."""

from collections import Counter
from collections.abc import Iterator

import dagster as dg

from notes_pipeline.contact_notes.checks import LOADED_CHECKS, loaded_checks
from notes_pipeline.contact_notes.load import LoadContext, load_ready_notes
from notes_pipeline.contact_notes.monitor import STATUS_ASSETS
from notes_pipeline.contact_notes.records import LoadResult, NormalizedNotes
from notes_pipeline.contact_notes.settings import MigrationSettings
from notes_pipeline.core.partitions import ONE_CID_PER_RUN, cid_partitions
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.resources.storage import AttachmentStorage
from notes_pipeline.core.run_metadata import LoadProgress, LoadSummary, RunRefusal
from notes_pipeline.core.status import FORCE_RERUN_TAG, refuses_rerun, settled_status
from notes_pipeline.core.vocabulary import Outcome, PlanOutcome, RunCode


@dg.asset(
    partitions_def=cid_partitions,
    backfill_policy=ONE_CID_PER_RUN,
    group_name="notes_migration",
    kinds={"mongodb", "s3"},
    check_specs=LOADED_CHECKS,
    description="Writes the CID's ready notes to CDP (idempotent upserts) and re-hosts "
    "attachments. Refuses when the CID's crm_notes_migration_enabled flag is off "
    "(FLAG_DISABLED), or when it is completed_success (ALREADY_MIGRATED) unless the run has "
    f"the tag {FORCE_RERUN_TAG}=true.",
)
def cdp_notes_loaded(
    context: dg.AssetExecutionContext,
    normalized_notes: NormalizedNotes,
    cdp_mongo: CdpMongo,
    attachment_storage: AttachmentStorage,
    settings: MigrationSettings,
) -> Iterator[dg.Output[LoadResult] | dg.AssetCheckResult]:
    """``LoadResult`` of writing the ready notes in batches (SPEC "Loading"), then gate 3.

    A copy that fails leaves a placeholder in the note (PRD S05 ERR-1); a later run replaces
    each placeholder whose copy now succeeds (metadata ``attachments_repaired``, issue #12).

    Raises ``dg.Failure`` (FLAG_DISABLED) when the CID's flag is off, and (ALREADY_MIGRATED,
    PRD S01 ERR-2) when the CID is ``completed_success`` and the run lacks the tag
    ``notes_pipeline/force_rerun=true``; either way nothing is written.
    """
    org = normalized_notes.org
    if not settings.is_enabled(org.cid):
        raise dg.Failure(
            description=f"{RunCode.FLAG_DISABLED}: crm_notes_migration_enabled is off "
            f"for CID {org.cid}",
            metadata={"reason_code": str(RunCode.FLAG_DISABLED), "cid": org.cid},
        )
    previous = settled_status(context.instance, org.cid, STATUS_ASSETS)
    if refuses_rerun(previous.status, context.run.tags):
        refusal = RunRefusal(str(RunCode.ALREADY_MIGRATED), org.cid, previous.run_id)
        context.log_event(
            dg.AssetObservation(
                asset_key=context.asset_key, partition=org.cid, metadata=refusal.to_metadata()
            )
        )
        raise dg.Failure(
            description=f"{RunCode.ALREADY_MIGRATED}: CID {org.cid} is completed_success "
            f"(run {previous.run_id}); nothing written. To re-run it anyway, add the run tag "
            f"{FORCE_RERUN_TAG}=true",
            metadata=refusal.to_metadata(),
            allow_retries=False,
        )
    index_mode = cdp_mongo.ensure_indexes()

    def report_progress(processed: int, total: int) -> None:
        context.log_event(
            dg.AssetObservation(
                asset_key=context.asset_key,
                partition=org.cid,
                metadata=LoadProgress(processed, total).to_metadata(),
            )
        )

    downloader = attachment_storage.downloader(
        settings.allowed_hosts(),
        settings.attachment_max_bytes,
        settings.attachment_timeout_s,
        settings.attachment_deadline_s,
    )
    ctx = LoadContext(
        org=org,
        mongo=cdp_mongo,
        storage=attachment_storage,
        downloader=downloader,
        batch_size=settings.batch_size,
        failure_threshold_pct=settings.failure_threshold_pct,
        attachment_workers=settings.attachment_workers,
        log=context.log,
        job_id=context.run.run_id,
        on_batch=report_progress,
    )
    try:
        result = load_ready_notes(
            ctx, normalized_notes.plans, normalized_notes.count(PlanOutcome.READY)
        )
    finally:
        downloader.close()
    tally = normalized_notes.tally
    assert tally is not None  # NormalizedNotes always has one
    summary = LoadSummary(result.status, result.load_failure_rate_pct)
    metadata = {
        **summary.to_metadata(),
        "migrated": result.count(Outcome.MIGRATED),
        "skipped": result.count(Outcome.SKIPPED),
        "failed": len(normalized_notes.failures) + len(result.failed),
        "failed_by_reason": dg.MetadataValue.json(
            {
                str(k): v
                for k, v in (normalized_notes.failed_by_reason + result.failed_by_reason).items()
            }
        ),
        "out_of_scope": normalized_notes.count(PlanOutcome.OUT_OF_SCOPE),
        "not_attempted": result.count(Outcome.NOT_ATTEMPTED),
        "source_total": normalized_notes.total,
        "attachments_planned": result.attachments_planned,
        "attachments_copied": result.attachments_copied,
        "attachments_repaired": result.attachments_repaired,
        "attachments_failed": len(result.attachment_failures),
        "attachments_failed_by_reason": dg.MetadataValue.json(
            dict(Counter(str(f.reason_code) for f in result.attachment_failures))
        ),
        "owners_unresolved": tally.owners_unresolved,
        "checkins_dropped": tally.checkins_dropped,
        "batches": result.batches,
        "duration_seconds": round(result.duration_seconds, 3),
        "index_mode": index_mode,
    }
    yield dg.Output(result, metadata=metadata)
    yield from loaded_checks(result, settings)
