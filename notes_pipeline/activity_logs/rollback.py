"""Rollback of one CID's activity logs (SPEC-activity-logs §8 [N21]): delete only the
company's ``source_tag = crm_migration`` documents, behind the confirmation phrase."""

import dagster as dg
import tenacity

from notes_pipeline.activity_logs import events
from notes_pipeline.activity_logs.assets.load import run_in_flight
from notes_pipeline.activity_logs.checks import EXTRACT_ASSET, NORMALIZED_ASSET
from notes_pipeline.activity_logs.jobs import utc_now
from notes_pipeline.activity_logs.records import ActivityRunCode, JobStatus
from notes_pipeline.core.alerts import Alert, AlertChannels, Channel, Priority
from notes_pipeline.core.chunks import remove_chunks
from notes_pipeline.core.resources.crm import CrmSource
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.rollback import RollbackConfig, require_confirmation
from notes_pipeline.core.run_metadata import RollbackSummary

REPORT_ASSET = dg.AssetKey("activity_log_validation_report")
DELETE_ATTEMPTS = 2  # the delete, then one retry (§8: 'retry → rollback_failed + alert')


class RollbackFailed(Exception):
    """The delete failed after its retry, or documents remained (``rollback_failed``)."""


def delete_all_tagged(cdp: CdpMongo, company_sso_id: str, attempts: int = DELETE_ATTEMPTS) -> int:
    """Delete the company's tagged documents (retried), then verify none is left (§8 ours:
    ``countDocuments({source_tag, company_sso_id}) = 0``). Returns ``records_removed``.

    Raises ``RollbackFailed`` (message: exception class or the count left, no values).
    """
    removed = 0
    try:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_exponential(multiplier=0.5, max=5),
            reraise=True,
        ):
            with attempt:
                removed += cdp.delete_activity_logs(company_sso_id)
        left = cdp.count_activity_logs(company_sso_id)
    except Exception as exc:  # noqa: BLE001 - any failure of the delete is rollback_failed
        raise RollbackFailed(type(exc).__name__) from exc
    if left:
        raise RollbackFailed(f"{left} documents left")
    return removed


@dg.op(
    description="Deletes one CID's migrated activity logs (source_tag crm_migration of its "
    "company only) and marks its last job rolled_back."
)
def rollback_activity_logs_op(
    context: dg.OpExecutionContext,
    config: RollbackConfig,
    crm_audits: CrmSource,
    cdp_mongo: CdpMongo,
    alerts: AlertChannels,
) -> dg.Output[dict]:
    """§8 rollback. Raises ``dg.Failure`` without the confirmation phrase,
    ``ROLLBACK_NOT_FOUND`` when no job ever ran for the CID, ``JOB_ALREADY_RUNNING`` while a
    job is in flight, and ``rollback_failed`` when the delete fails (job marked, P1 alert)."""
    require_confirmation(config)
    org = crm_audits.get_organization(config.cid)
    company = org.company_sso_id
    jobs = cdp_mongo.jobs_of(company)
    if not jobs:
        raise dg.Failure(
            description=f"{ActivityRunCode.ROLLBACK_NOT_FOUND}: no activity-log job ever ran "
            f"for CID {org.cid}",
            metadata={"reason_code": str(ActivityRunCode.ROLLBACK_NOT_FOUND), "cid": org.cid},
        )
    lock = cdp_mongo.job_lock(company)
    if lock is not None and run_in_flight(context.instance, str(lock["job_id"])):
        raise dg.Failure(
            description=f"{ActivityRunCode.JOB_ALREADY_RUNNING}: job {lock['job_id']} of CID "
            f"{org.cid} is in progress; roll back after it ends",
            metadata={"reason_code": str(ActivityRunCode.JOB_ALREADY_RUNNING), "cid": org.cid},
        )
    last = jobs[0]
    try:
        removed = delete_all_tagged(cdp_mongo, company)
    except RollbackFailed as exc:
        cdp_mongo.update_job(
            str(last["job_id"]),
            {"status": str(JobStatus.ROLLBACK_FAILED), "updated_at": utc_now()},
        )
        events.emit(
            context.log,
            events.ROLLBACK_FAILED,
            job_id=last["job_id"],
            cid=org.cid,
            records_removed=0,
        )
        alerts.send(
            Alert(
                Channel.PAGERDUTY,
                events.ROLLBACK_FAILED,
                org.cid,
                str(last["job_id"]),
                Priority.P1,
                {"status": str(JobStatus.ROLLBACK_FAILED)},
            )
        )
        raise dg.Failure(
            description=f"{JobStatus.ROLLBACK_FAILED}: CID {org.cid} ({exc})",
            metadata={"reason_code": str(JobStatus.ROLLBACK_FAILED), "cid": org.cid},
        ) from None
    if lock is not None:
        cdp_mongo.release_job_lock(company, str(lock["job_id"]))
    # §10 [N18]: the intermediates (audits and plans, which hold PII) go with the rollback
    chunks_removed = remove_chunks(
        context.instance.storage_directory(), org.cid, [EXTRACT_ASSET, NORMALIZED_ASSET]
    )
    cdp_mongo.update_job(
        str(last["job_id"]),
        {"status": str(JobStatus.ROLLED_BACK), "records_removed": removed, "updated_at": utc_now()},
    )
    events.emit(
        context.log, events.ROLLED_BACK, job_id=last["job_id"], cid=org.cid, records_removed=removed
    )
    summary = RollbackSummary(cid=org.cid, records_removed=removed)
    context.log_event(
        dg.AssetObservation(
            asset_key=REPORT_ASSET, partition=org.cid, metadata=summary.to_metadata()
        )
    )
    result = {
        "cid": org.cid,
        "records_removed": removed,
        "job_id": str(last["job_id"]),
        "chunk_runs_removed": chunks_removed,
    }
    return dg.Output(result, metadata=result)


@dg.job(
    description="Roll back one CID's activity logs (run config: cid, confirm: 'ROLLBACK <cid>')."
)
def rollback_activity_logs_cid():
    """§15 ``rollback_activity_logs_cid``."""
    rollback_activity_logs_op()
