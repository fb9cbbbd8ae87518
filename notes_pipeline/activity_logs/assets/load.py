"""cdp_activity_logs_loaded: the CID's planned activity logs written to CDP ``activity_logs``
under a job document (SPEC-activity-logs §5, §6, §15)."""

from collections.abc import Iterator
from datetime import timedelta
from functools import partial

import dagster as dg

from notes_pipeline.activity_logs import events
from notes_pipeline.activity_logs.checks import LOADED_CHECKS, loaded_checks
from notes_pipeline.activity_logs.jobs import (
    HALT_FAILURE_RATE,
    JobAlreadyRunning,
    counter_fields,
    finish_job,
    start_job,
    utc_now,
)
from notes_pipeline.activity_logs.load import (
    ActivityLoadContext,
    ActivityLoadResult,
    load_activity_logs,
)
from notes_pipeline.activity_logs.records import (
    ActivityRunCode,
    AuditExtract,
    JobStatus,
    NormalizedActivityLogs,
)
from notes_pipeline.activity_logs.settings import ActivityLogSettings
from notes_pipeline.activity_logs.summary import coverage
from notes_pipeline.core.partitions import ONE_CID_PER_RUN, cid_partitions
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.run_metadata import LoadProgress, LoadSummary, RunRefusal
from notes_pipeline.core.status import IN_FLIGHT
from notes_pipeline.core.vocabulary import RunCode

LOADED_ASSET = "cdp_activity_logs_loaded"
PROGRESS_EVERY_PCT = 1.0  # a LoadProgress observation per this much progress (and at the end)


def _refuse(context: dg.AssetExecutionContext, cid: str, code: str, description: str):
    refusal = RunRefusal(code, cid)
    context.log_event(
        dg.AssetObservation(
            asset_key=context.asset_key, partition=cid, metadata=refusal.to_metadata()
        )
    )
    return dg.Failure(
        description=f"{code}: {description}", metadata=refusal.to_metadata(), allow_retries=False
    )


def run_in_flight(instance: dg.DagsterInstance, run_id: str) -> bool:
    """True when the Dagster run ``run_id`` (= a job_id) is queued, starting or running."""
    run = instance.get_run_by_id(run_id)
    return run is not None and run.status in IN_FLIGHT


@dg.asset(
    partitions_def=cid_partitions,
    backfill_policy=ONE_CID_PER_RUN,
    group_name="activity_logs",
    kinds={"mongodb"},
    check_specs=LOADED_CHECKS,
    description="Writes the CID's ready activity logs to CDP activity_logs ($setOnInsert "
    "upserts by (company_sso_id, external_id), batches of ≤ 20) under a job document in "
    "crm_activity_log_migration_jobs; halts above the failure rate. Refuses FLAG_DISABLED, "
    "PREREQ_FAILED and JOB_ALREADY_RUNNING before any write.",
)
def cdp_activity_logs_loaded(
    context: dg.AssetExecutionContext,
    crm_audits_raw: AuditExtract,
    normalized_activity_logs: NormalizedActivityLogs,
    cdp_mongo: CdpMongo,
    activity_log_settings: ActivityLogSettings,
) -> Iterator[dg.Output[ActivityLoadResult] | dg.AssetCheckResult]:
    """``ActivityLoadResult`` of one CID (§6), then the load check.

    Raises ``dg.Failure`` with ``FLAG_DISABLED`` (the CID's flag is off), ``PREREQ_FAILED``
    (indexes cannot be created, cutoff unknown, coverage gate not passed) or
    ``JOB_ALREADY_RUNNING`` (another job of the company is in flight); nothing is written.
    """
    settings = activity_log_settings
    normalized = normalized_activity_logs
    org = normalized.org
    cid = org.cid
    job_id = context.run.run_id
    if not settings.is_enabled(cid):
        raise _refuse(
            context,
            cid,
            RunCode.FLAG_DISABLED,
            f"crm_activity_logs_migration_enabled is off for CID {cid}",
        )
    probe = crm_audits_raw.probe
    try:
        index_modes = cdp_mongo.ensure_activity_log_indexes()
    except Exception as exc:  # noqa: BLE001 - any index failure is a failed prerequisite
        raise _refuse(
            context, cid, ActivityRunCode.PREREQ_FAILED, f"indexes: {type(exc).__name__}"
        ) from None
    if probe.count and probe.cutoff is None:
        raise _refuse(context, cid, ActivityRunCode.PREREQ_FAILED, "cutoff unknown")
    if not coverage(normalized).meets(settings.coverage_threshold_pct):
        raise _refuse(context, cid, ActivityRunCode.PREREQ_FAILED, "coverage gate not passed")
    try:
        _job, resume = start_job(
            cdp_mongo,
            org,
            probe,
            job_id,
            is_in_flight=partial(run_in_flight, context.instance),
            date_range_start=crm_audits_raw.date_range_start,
            triggered_by=events.trigger_label(context.run.tags),
        )
    except JobAlreadyRunning as exc:
        raise _refuse(
            context,
            cid,
            ActivityRunCode.JOB_ALREADY_RUNNING,
            f"job {exc.job_id} of CID {cid} is in progress",
        ) from None
    total = probe.count
    last_observed = [-PROGRESS_EVERY_PCT]

    def on_progress(result: ActivityLoadResult) -> None:
        counters = result.counters
        cdp_mongo.update_job(
            job_id,
            {
                **counter_fields(counters, total),
                "last_audit_id": result.last_audit_id,
                "updated_at": utc_now(),
            },
        )
        progress = LoadProgress(counters.processed, total)
        if progress.progress_pct - last_observed[0] >= PROGRESS_EVERY_PCT:
            last_observed[0] = progress.progress_pct
            context.log_event(
                dg.AssetObservation(
                    asset_key=context.asset_key, partition=cid, metadata=progress.to_metadata()
                )
            )

    ctx = ActivityLoadContext(
        org=org,
        write=partial(cdp_mongo.upsert_activity_logs, org.company_sso_id),
        job_id=job_id,
        batch_size=settings.batch_size,
        write_concurrency=settings.write_concurrency,
        halt_threshold=settings.halt_threshold,
        max_write_rate_per_s=settings.max_write_rate_per_s,
        resume=resume,
        log=context.log,
        on_progress=on_progress,
    )
    result = load_activity_logs(ctx, normalized.iter_entries())
    expire_at = utc_now() + timedelta(days=settings.failure_retention_days)
    cdp_mongo.record_failures(
        [
            {
                "company_sso_id": org.company_sso_id,
                "cid": cid,
                "job_id": job_id,
                "external_id": f.external_id,
                "crm_audit_id": f.crm_audit_id,
                "reason_code": f.reason_code,
                "details": f.details,
                "expire_at": expire_at,
                **({"document_id": f.document_id} if f.document_id is not None else {}),
            }
            for f in result.failures
        ]
    )
    final = {**counter_fields(result.counters, total), "last_audit_id": result.last_audit_id}
    if result.halted:
        finish_job(
            cdp_mongo,
            org.company_sso_id,
            job_id,
            {**final, "status": str(JobStatus.HALTED), "halted_reason": HALT_FAILURE_RATE},
        )
    else:
        cdp_mongo.update_job(job_id, {**final, "updated_at": utc_now()})
    windows = result.window_seconds
    metadata = {
        **LoadSummary(result.status, round(result.counters.failure_rate * 100, 3)).to_metadata(),
        "job_id": job_id,
        "records_total": total,
        "records_migrated": result.counters.migrated,
        "records_skipped": result.counters.skipped,
        "records_failed": result.counters.failed,
        "not_attempted": result.not_attempted,
        "failure_rate": result.counters.failure_rate,
        "write_failure_rate": result.writes.failure_rate,
        "skipped_by_code": dg.MetadataValue.json(dict(result.skipped_by_code)),
        "failed_by_code": dg.MetadataValue.json(result.failed_by_code()),
        "queue_retried": result.queue_retried,
        "queue_recovered": result.queue_recovered,
        "queue_left": result.queue_left,
        "last_audit_id": result.last_audit_id,
        "batches": result.batches,
        # per-batch cost at the start vs the end (mean interval between settled batches)
        "first_window_s": round(sum(windows[:50]) / len(windows[:50]), 4) if windows else None,
        "last_window_s": round(sum(windows[-50:]) / len(windows[-50:]), 4) if windows else None,
        "duration_seconds": result.duration_seconds,
        "resumed_from_job_id": result.resumed_from_job_id,
        "index_modes": dg.MetadataValue.json(index_modes),
    }
    yield dg.Output(result, metadata={k: v for k, v in metadata.items() if v is not None})
    yield from loaded_checks(result, settings)
