"""The job document in CDP MongoDB (SPEC-activity-logs §6 [N12]): one per run, read by CDP's
status endpoints, with the one-active-job rule, stale-lock takeover and resume.

``crm_activity_log_migration_jobs`` holds ``{_id = job_id, job_id, cid, company_sso_id,
date_range_start, cutoff, high_water_id, status, records_total, records_migrated,
records_skipped, records_failed, progress_pct, failure_rate, last_audit_id, accuracy_pct,
halted_reason, resumed_from_job_id, triggered_by, started_at, updated_at, finished_at}``;
``job_id`` is the Dagster run id. ``crm_activity_log_migration_locks`` holds one lock document
``{_id = company_sso_id, job_id}`` while a job is in progress: a second trigger meets it and
ends ``JOB_ALREADY_RUNNING`` (409); a lock whose run is no longer in flight is taken over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from notes_pipeline.activity_logs.records import RETRYABLE_FAILURES, JobStatus
from notes_pipeline.core.crm_records import AuditProbe, Organization
from notes_pipeline.core.resources.mongo import CdpMongo

#: ``halted_reason`` of a job whose run stopped without finishing it (stale lock, §6 [N12])
RUN_NOT_IN_FLIGHT = "run_not_in_flight"
HALT_FAILURE_RATE = "failure_rate"


class JobAlreadyRunning(Exception):
    """Another job of the company is in progress (409 ``JOB_ALREADY_RUNNING``)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} is in progress")
        self.job_id = job_id


@dataclass
class LoadCounters:
    """The §6 counters. ``failure_rate = failed / (migrated + skipped + failed)``."""

    migrated: int = 0
    skipped: int = 0
    failed: int = 0

    @property
    def processed(self) -> int:
        """Records with an outcome so far."""
        return self.migrated + self.skipped + self.failed

    @property
    def failure_rate(self) -> float:
        """As a fraction, 6 decimals (0.0 when nothing processed)."""
        return round(self.failed / self.processed, 6) if self.processed else 0.0

    def exceeds(self, threshold: float) -> bool:
        """§6 halt: ``failure_rate > threshold`` in exact arithmetic (exactly 0.10 goes on)."""
        return Fraction(self.failed) > Fraction(str(threshold)) * self.processed

    def plus(self, other: LoadCounters) -> LoadCounters:
        """The sum of two counters."""
        return LoadCounters(
            self.migrated + other.migrated, self.skipped + other.skipped, self.failed + other.failed
        )


@dataclass(frozen=True)
class ResumePoint:
    """Where a new job picks up a halted or abandoned one (§6 resume [N12]): records with
    ``crm_audit_id <= last_audit_id`` are done except ``retry`` (the old job's retryable
    failures, by external_id); the old job's counters carry over minus those retries.
    ``attempt_ids``: external_id → the ``_id`` the old job last sent that record with (write
    failures), so that a record the old job did store is counted migrated, not a duplicate."""

    job_id: str
    last_audit_id: int
    carried: LoadCounters
    retry: frozenset[str] = field(default_factory=frozenset)
    attempt_ids: Mapping[str, Any] = field(default_factory=dict)

    def done(self, crm_audit_id: int, external_id: str) -> bool:
        """True when the old job already accounted for this record."""
        return crm_audit_id <= self.last_audit_id and external_id not in self.retry


def utc_now() -> datetime:
    """Now, UTC, naive (what CDP stores; ms precision)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def progress_pct(processed: int, records_total: int) -> float:
    """§6: processed / records_total × 100, 1 decimal, at most 100 (100.0 when total is 0)."""
    if not records_total:
        return 100.0
    return min(100.0, round(processed / records_total * 100, 1))


def new_job(
    job_id: str,
    org: Organization,
    probe: AuditProbe,
    *,
    date_range_start: str | None,
    triggered_by: str,
    resume: ResumePoint | None,
    now: datetime,
) -> dict[str, Any]:
    """The job document of a starting run (status ``in_progress``)."""
    carried = resume.carried if resume else LoadCounters()
    return {
        "job_id": job_id,
        "cid": org.cid,
        "company_sso_id": org.company_sso_id,
        "date_range_start": date_range_start,
        "cutoff": probe.cutoff,
        "high_water_id": probe.high_water_id,
        "status": str(JobStatus.IN_PROGRESS),
        "records_total": probe.count,
        **counter_fields(carried, probe.count),
        "last_audit_id": resume.last_audit_id if resume else None,
        "accuracy_pct": None,
        "halted_reason": None,
        "resumed_from_job_id": resume.job_id if resume else None,
        "triggered_by": triggered_by,
        "started_at": now,
        "updated_at": now,
        "finished_at": None,
    }


def counter_fields(counters: LoadCounters, records_total: int) -> dict[str, Any]:
    """The job document's counter fields for ``counters``."""
    return {
        "records_migrated": counters.migrated,
        "records_skipped": counters.skipped,
        "records_failed": counters.failed,
        "progress_pct": progress_pct(counters.processed, records_total),
        "failure_rate": counters.failure_rate,
    }


def resume_point(
    previous: dict[str, Any] | None, retryable: Mapping[str, Any]
) -> ResumePoint | None:
    """The resume point from the company's previous job when it was ``halted`` (by the halt
    rule, or because its run died) and had saved a cursor; None = start from the beginning.
    ``retryable``: the previous job's retryable failures, external_id → the ``_id`` it last
    sent (None when it recorded none)."""
    if not previous or previous.get("status") != JobStatus.HALTED:
        return None
    if previous.get("last_audit_id") is None:
        return None
    carried = LoadCounters(
        int(previous.get("records_migrated") or 0),
        int(previous.get("records_skipped") or 0),
        max(0, int(previous.get("records_failed") or 0) - len(retryable)),
    )
    return ResumePoint(
        str(previous["job_id"]),
        int(previous["last_audit_id"]),
        carried,
        frozenset(retryable),
        {key: _id for key, _id in retryable.items() if _id is not None},
    )


def start_job(
    cdp: CdpMongo,
    org: Organization,
    probe: AuditProbe,
    job_id: str,
    *,
    is_in_flight: Callable[[str], bool],
    date_range_start: str | None,
    triggered_by: str,
) -> tuple[dict[str, Any], ResumePoint | None]:
    """Take the company's lock and insert this run's job document; returns it and the resume
    point (None = a fresh start).

    Raises ``JobAlreadyRunning`` when the lock's job is still in flight (``is_in_flight`` of
    its job id = Dagster run id). A lock whose run is not in flight is taken over: that job
    becomes ``halted`` (``run_not_in_flight``) and this one resumes it.
    """
    company = org.company_sso_id
    held = cdp.acquire_job_lock(company, job_id)
    if held is not None:
        stale = str(held["job_id"])
        if is_in_flight(stale):
            raise JobAlreadyRunning(stale)
        if not cdp.take_over_job_lock(company, stale, job_id):
            raise JobAlreadyRunning(str((cdp.job_lock(company) or held)["job_id"]))
        old = cdp.find_job(stale)
        if old is not None and old.get("status") == JobStatus.IN_PROGRESS:
            cdp.update_job(
                stale,
                {
                    "status": str(JobStatus.HALTED),
                    "halted_reason": RUN_NOT_IN_FLIGHT,
                    "updated_at": utc_now(),
                },
            )
    previous = next((j for j in cdp.jobs_of(company) if j.get("job_id") != job_id), None)
    retryable: dict[str, Any] = {}
    if previous is not None and previous.get("status") == JobStatus.HALTED:
        retryable = {
            str(f["external_id"]): f.get("document_id")
            for f in cdp.failures_of(company, str(previous["job_id"]))
            if f.get("reason_code") in RETRYABLE_FAILURES
        }
    resume = resume_point(previous, retryable)
    job = new_job(
        job_id,
        org,
        probe,
        date_range_start=date_range_start,
        triggered_by=triggered_by,
        resume=resume,
        now=utc_now(),
    )
    try:
        cdp.insert_job(job)
    except Exception:
        cdp.release_job_lock(company, job_id)
        raise
    return job, resume


def finish_job(cdp: CdpMongo, company_sso_id: str, job_id: str, fields: dict[str, Any]) -> None:
    """Write the job's final fields (status, counters, accuracy) and release the lock."""
    now = utc_now()
    cdp.update_job(job_id, {**fields, "updated_at": now, "finished_at": now})
    cdp.release_job_lock(company_sso_id, job_id)
