"""activity_log_validation_report: accuracy, fidelity, duplicates, error CSV and the CID's
final state, written to the job document (SPEC-activity-logs §6 states, §7, §15)."""

import time
from collections.abc import Iterator

import dagster as dg

from notes_pipeline.activity_logs import events
from notes_pipeline.activity_logs.checks import REPORT_CHECKS, report_checks
from notes_pipeline.activity_logs.jobs import counter_fields, finish_job
from notes_pipeline.activity_logs.load import ActivityLoadResult
from notes_pipeline.activity_logs.records import AuditExtract, NormalizedActivityLogs
from notes_pipeline.activity_logs.settings import ActivityLogSettings
from notes_pipeline.activity_logs.validation import (
    ActivityLogReport,
    StoredIndex,
    Thresholds,
    build_report,
    compare_plan,
    error_csv,
    index_stored,
    summary_markdown,
)
from notes_pipeline.core.partitions import ONE_CID_PER_RUN, cid_partitions
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.resources.storage import AttachmentStorage
from notes_pipeline.core.retries import with_retries
from notes_pipeline.core.run_metadata import ReportSummary
from notes_pipeline.core.vocabulary import RunCode


@dg.asset(
    partitions_def=cid_partitions,
    backfill_policy=ONE_CID_PER_RUN,
    group_name="activity_logs",
    kinds={"python"},
    check_specs=REPORT_CHECKS,
    description="accuracy_pct (countDocuments vs source COUNT), fidelity of every written "
    "document against its plan, duplicates, contact_not_found rate, end-of-run queue, counts "
    "by outcome and code, error CSV; sets the job document's final state.",
)
def activity_log_validation_report(
    context: dg.AssetExecutionContext,
    crm_audits_raw: AuditExtract,
    normalized_activity_logs: NormalizedActivityLogs,
    cdp_activity_logs_loaded: ActivityLoadResult,
    cdp_mongo: CdpMongo,
    attachment_storage: AttachmentStorage,
    activity_log_settings: ActivityLogSettings,
) -> Iterator[dg.Output[ActivityLogReport] | dg.AssetCheckResult]:
    """``ActivityLogReport`` of the CID (§7); writes the error CSV to the CDP bucket and the
    final ``status``/``accuracy_pct`` to the job document, then releases the job's lock."""
    started = time.monotonic()
    settings = activity_log_settings
    load = cdp_activity_logs_loaded
    org = normalized_activity_logs.org
    company = org.company_sso_id
    # one read of the company's tagged documents serves the fidelity pass, the duplicate scan
    # and the count (= countDocuments of the same filter; FerretDB counts by reading them all)
    scanned = with_retries(lambda: index_stored(cdp_mongo.iter_activity_logs(company)))
    stored = scanned if scanned is not None else StoredIndex()
    fidelity = compare_plan(normalized_activity_logs.iter_entries(), stored)
    target = scanned.scanned if scanned is not None else None
    report = build_report(
        org.cid,
        load,
        normalized_activity_logs.tally,
        fidelity,
        stored,
        target,
        Thresholds(settings.accuracy_threshold_pct, settings.contact_not_found_threshold_pct),
    )
    csv_bytes, report.error_rows = error_csv(load, fidelity)
    error_key = f"_migration_reports/activity_logs/{org.cid}/{load.job_id}/error_log.csv"
    attachment_storage.put(error_key, csv_bytes, "text/csv")
    report.duration_seconds = round(time.monotonic() - started, 3)
    if report.validation_skipped:
        context.log.warning(f"{RunCode.VALIDATION_SKIPPED}: count unavailable for CID {org.cid}")
    finish_job(
        cdp_mongo,
        company,
        load.job_id,
        {
            **counter_fields(load.counters, crm_audits_raw.probe.count),
            "status": str(report.status),
            "accuracy_pct": report.accuracy_pct,
        },
    )
    events.emit(
        context.log,
        events.COMPLETED,
        job_id=load.job_id,
        cid=org.cid,
        status=str(report.status),
        records_migrated=load.counters.migrated,
        records_skipped=load.counters.skipped,
        records_failed=load.counters.failed,
        accuracy_pct=report.accuracy_pct,
        duration_seconds=load.duration_seconds + report.duration_seconds,
    )
    summary = ReportSummary(
        status=report.status,
        outcomes=report.outcomes,
        failure_rate_pct=round(report.failure_rate * 100, 3),
        match_pct=report.accuracy_pct,
        source_count=report.source_count,
        target_count=report.target_count,
        error_log_url=attachment_storage.location(error_key),
    )
    metadata = {
        **summary.to_metadata(),
        "job_id": load.job_id,
        "accuracy_pct": report.accuracy_pct,
        "summary": dg.MetadataValue.md(summary_markdown(report)),
        "skipped_by_code": dg.MetadataValue.json(report.skipped_by_code),
        "failed_by_code": dg.MetadataValue.json(report.failed_by_code),
        "contact_not_found_pct": report.contact_not_found_pct,
        "actor_unresolved_pct": report.actor_unresolved_pct,
        "duplicates": len(report.duplicates),
        "fidelity_mismatches": report.mismatched_count,
        "unkeyed_documents": report.unkeyed_documents,
        "queue_left": report.queue_left,
        "by_category_action": dg.MetadataValue.json(report.by_category_action),
        "by_actor_case": dg.MetadataValue.json(report.by_actor_case),
        "error_log_rows": report.error_rows,
        "duration_seconds": report.duration_seconds,
    }
    yield dg.Output(report, metadata={k: v for k, v in metadata.items() if v is not None})
    yield from report_checks(report, settings)
