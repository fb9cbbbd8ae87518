"""validation_report: recount, match_pct, failure rate, fidelity, duplicates, error log."""

import time
from collections import Counter
from collections.abc import Iterator

import dagster as dg

from notes_pipeline.contact_notes import events
from notes_pipeline.contact_notes import reason_codes as rc
from notes_pipeline.contact_notes.checks import REPORT_CHECKS, report_checks
from notes_pipeline.contact_notes.load import failure_rate
from notes_pipeline.contact_notes.records import LoadResult, NormalizedNotes, ValidationReport
from notes_pipeline.contact_notes.validation import (
    decide_status,
    error_log_csv,
    fidelity_mismatches,
    outcome_counts,
    pct,
    summary_markdown,
    with_retries,
)
from notes_pipeline.core.partitions import ONE_CID_PER_RUN, cid_partitions
from notes_pipeline.core.resources.crm import CrmSource
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.resources.settings import MigrationSettings
from notes_pipeline.core.resources.storage import AttachmentStorage


@dg.asset(
    partitions_def=cid_partitions,
    backfill_policy=ONE_CID_PER_RUN,
    group_name="notes_migration",
    kinds={"python"},
    check_specs=REPORT_CHECKS,
    description="Source recount vs CDP count, match_pct, failure rate, field fidelity, duplicate "
    "scan and the error-log CSV; decides the CID's monitor status.",
)
def validation_report(
    context: dg.AssetExecutionContext,
    normalized_notes: NormalizedNotes,
    cdp_notes_loaded: LoadResult,
    crm: CrmSource,
    cdp_mongo: CdpMongo,
    attachment_storage: AttachmentStorage,
    settings: MigrationSettings,
) -> Iterator[dg.Output[ValidationReport] | dg.AssetCheckResult]:
    started = time.monotonic()
    org, plans, load = normalized_notes.org, normalized_notes.plans, cdp_notes_loaded
    source = with_retries(lambda: crm.count_in_scope_notes(org.cid, settings.allowed_note_type_ids))
    target = with_retries(lambda: cdp_mongo.count_migrated(org.company_sso_id))
    skipped_validation = source is None or target is None
    match = None if skipped_validation else pct(target, source)
    counts = outcome_counts(plans, load)
    fail_pct = round(
        failure_rate(counts[rc.FAILED], counts[rc.MIGRATED], counts[rc.SKIPPED]) * 100, 3
    )
    ready_ids = [p.legacy_crm_note_id for p in plans if p.outcome == rc.READY]
    stored = cdp_mongo.find_migrated(org.company_sso_id, ready_ids)
    mismatches = fidelity_mismatches(plans, stored)
    duplicates = cdp_mongo.duplicate_legacy_ids(org.company_sso_id)
    ready = [p for p in plans if p.outcome == rc.READY]
    failed_by_reason = Counter(p.reason_code for p in plans if p.outcome == rc.FAILED)
    failed_by_reason.update(o.reason_code for o in load.outcomes if o.outcome == rc.FAILED)
    csv_bytes, error_rows = error_log_csv(plans, load)
    error_key = f"_migration_reports/{org.cid}/{context.run.run_id}/error_log.csv"
    attachment_storage.put(error_key, csv_bytes, "text/csv")
    report = ValidationReport(
        cid=org.cid,
        company_sso_id=org.company_sso_id,
        status=decide_status(
            halted=load.status == rc.HALTED,
            skipped=skipped_validation,
            match=match,
            failure_pct=fail_pct,
            duplicates=len(duplicates),
            mismatches=len(mismatches),
            match_threshold=settings.match_threshold_pct,
            failure_threshold=settings.failure_threshold_pct,
        ),
        source_count=source,
        target_count=target,
        match_pct=match,
        failure_rate_pct=fail_pct,
        outcomes=dict(counts),
        failed_by_reason=dict(failed_by_reason),
        attachments_planned=load.attachments_planned,
        attachments_copied=load.attachments_copied,
        attachment_success_pct=pct(load.attachments_copied, load.attachments_planned),
        owner_resolution_pct=pct(sum(1 for p in ready if p.owner_resolved), len(ready)),
        checkins_dropped=sum(1 for p in ready if p.checkin_dropped),
        duplicate_legacy_ids=duplicates,
        fidelity_mismatches=mismatches,
        validation_skipped=skipped_validation,
        error_log_key=error_key,
        error_rows=error_rows,
        duration_seconds=round(load.duration_seconds + time.monotonic() - started, 3),
    )
    if skipped_validation:
        context.log.warning(f"{rc.VALIDATION_SKIPPED}: count unavailable for CID {org.cid}")
    events.emit(
        context.log,
        events.COMPLETED,
        job_id=context.run.run_id,
        cid=org.cid,
        status=report.status,
        notes_migrated=counts[rc.MIGRATED],
        notes_failed=counts[rc.FAILED],
        match_pct=match,
        duration_seconds=report.duration_seconds,
    )
    metadata = {
        "status": report.status,
        "summary": dg.MetadataValue.md(summary_markdown(report)),
        "source_count": source if source is not None else -1,
        "target_count": target if target is not None else -1,
        "match_pct": match if match is not None else -1.0,
        "failure_rate_pct": fail_pct,
        "outcomes": dg.MetadataValue.json(report.outcomes),
        "failed_by_reason": dg.MetadataValue.json(report.failed_by_reason),
        "attachment_success_pct": report.attachment_success_pct,
        "owner_resolution_pct": report.owner_resolution_pct,
        "duplicates": len(duplicates),
        "fidelity_mismatches": len(mismatches),
        "error_log": dg.MetadataValue.url(attachment_storage.location(error_key)),
        "error_log_rows": error_rows,
    }
    yield dg.Output(report, metadata=metadata)
    yield from report_checks(report, settings)
