"""Writing one CID's planned activity logs (SPEC-activity-logs §6): batches of ≤ 20 through
``write_concurrency`` writers, a failed batch retried once, the end-of-run queue, the halt rule
after every batch, and the progress the job document shows.

The halt rule (§6 formula) judges the write path: the ready records written so far
(migrated, skipped as ``duplicate_external_id``, failed). Failures decided by the plan are
judged once, over the whole CID, by the blocking ``planned_failure_rate`` gate (same
formula) — counting them in ``audits.id`` order would halt a CID whose few deterministic
failures happen to come first. The job's counters and ``failure_rate`` cover everything.

Plain Python over an iterable of ``PlanEntry`` (read chunk by chunk): the writer, the
progress callback and the clock are injected, so tests drive it without Dagster.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from notes_pipeline.activity_logs import events
from notes_pipeline.activity_logs.jobs import LoadCounters, ResumePoint
from notes_pipeline.activity_logs.records import (
    FailureCode,
    PlanEntry,
    PlanOutcome,
    SkipCode,
)
from notes_pipeline.core.crm_records import Organization
from notes_pipeline.core.resources.mongo_writes import BulkUpsertResult, partial_result, with_ids
from notes_pipeline.core.vocabulary import LoadStatus


class Writer(Protocol):
    """``CdpMongo.upsert_activity_logs`` bound to one company: per-row outcomes by index;
    ``recheck_matched`` on retries (``mongo_writes.upsert_on_insert``)."""

    def __call__(
        self, documents: Sequence[dict[str, Any]], *, recheck_matched: bool = False
    ) -> BulkUpsertResult:
        """Upsert ``documents``; outcomes by their index in ``documents``."""
        ...


@dataclass(frozen=True)
class RecordFailure:
    """A final failure (§6 failed-record store, §7 error CSV): ids and codes only.
    ``document_id``: the ``_id`` a write failure was last sent with (None for the others)."""

    external_id: str
    crm_audit_id: int
    reason_code: str
    details: str = ""
    document_id: Any = None


@dataclass
class ActivityLoadResult:
    """What ``cdp_activity_logs_loaded`` produces (§6).

    ``counters`` are this job's totals including what a resumed job carried over
    (``carried``); ``failures`` lists every final failure of this job (plan and write);
    ``writes`` counts the write path alone (what the halt rule judges); ``queue_left`` are
    write failures the end-of-run retry did not recover (0 when halted
    before the retry, which then never ran: ``queue_retried`` = 0). ``window_seconds`` is the
    wall time between consecutive settled batches, in order (first vs last: per-batch cost).
    """

    cid: str
    company_sso_id: str
    job_id: str
    status: LoadStatus = LoadStatus.LOADED
    counters: LoadCounters = field(default_factory=LoadCounters)
    carried: LoadCounters = field(default_factory=LoadCounters)
    writes: LoadCounters = field(default_factory=LoadCounters)
    skipped_by_code: Counter = field(default_factory=Counter)
    failures: list[RecordFailure] = field(default_factory=list)
    queued: int = 0
    queue_retried: int = 0
    queue_recovered: int = 0
    queue_left: int = 0
    not_attempted: int = 0
    last_audit_id: int | None = None
    batches: int = 0
    window_seconds: list[float] = field(default_factory=list)
    duration_seconds: float = 0.0
    resumed_from_job_id: str | None = None

    @property
    def halted(self) -> bool:
        """The halt rule stopped the load."""
        return self.status == LoadStatus.HALTED

    def failed_by_code(self) -> dict[str, int]:
        """Final failures per reason code."""
        return dict(sorted(Counter(f.reason_code for f in self.failures).items()))


@dataclass
class ActivityLoadContext:
    """What the loader touches: the writer for the company, the §6 settings, the job."""

    org: Organization
    write: Writer
    job_id: str
    batch_size: int = 20
    write_concurrency: int = 4
    halt_threshold: float = 0.10
    max_write_rate_per_s: float | None = None
    resume: ResumePoint | None = None
    log: Any = None
    on_progress: Callable[[ActivityLoadResult], None] | None = None
    clock: Callable[[], float] = time.monotonic
    pause: Callable[[float], None] = time.sleep


def _attempt(
    write: Writer, documents: Sequence[dict[str, Any]], *, retry: bool = False
) -> BulkUpsertResult:
    try:
        return write(documents, recheck_matched=retry)
    except Exception as exc:  # noqa: BLE001 - any failure of the call fails its rows (retried)
        return partial_result(exc, len(documents))  # rows of the calls that ended keep theirs


def write_batch(
    write: Writer, documents: Sequence[dict[str, Any]], *, recheck: bool = False
) -> BulkUpsertResult:
    """Write one batch of documents (from ``with_ids``: a row keeps its ``_id`` across
    attempts); its failed rows are retried once, together (§6 'a failed batch is retried
    once'), and a retried row its own failed attempt did insert counts as upserted. ``recheck``:
    the first attempt does that too (rows a halted job sent, with that job's ``_id``). Never
    raises: a row that still fails is in ``errors``."""
    first = _attempt(write, documents, retry=recheck)
    if not first.errors:
        return first
    failed = sorted(first.errors)
    again = _attempt(write, [documents[i] for i in failed], retry=True)
    merged = BulkUpsertResult(upserted=set(first.upserted), matched=set(first.matched))
    for offset, index in enumerate(failed):
        if offset in again.upserted:
            merged.upserted.add(index)
        elif offset in again.matched:
            merged.matched.add(index)
        else:
            merged.errors[index] = again.errors.get(offset, first.errors[index])
    return merged


def _document(entry: PlanEntry, resume: ResumePoint | None) -> dict[str, Any]:
    """The entry's document; with the ``_id`` a halted job last sent it with, if any."""
    document = entry.document or {}
    sent_id = resume.attempt_ids.get(entry.external_id) if resume is not None else None
    return document if sent_id is None else {**document, "_id": sent_id}


class _Loader:
    def __init__(self, ctx: ActivityLoadContext) -> None:
        self.ctx = ctx
        carried = ctx.resume.carried if ctx.resume else LoadCounters()
        self.result = ActivityLoadResult(
            cid=ctx.org.cid,
            company_sso_id=ctx.org.company_sso_id,
            job_id=ctx.job_id,
            counters=LoadCounters(carried.migrated, carried.skipped, carried.failed),
            carried=carried,
            resumed_from_job_id=ctx.resume.job_id if ctx.resume else None,
        )
        self.queue: list[tuple[PlanEntry, dict[str, Any]]] = []  # with the document sent
        self.progress_every = max(1, ctx.write_concurrency)  # job document: every N batches
        #: the write path's own outcomes (ready records only): what the halt rule judges
        self.writes = self.result.writes
        self.started = ctx.clock()
        self.last_done = self.started
        self.written = 0

    def _emit(self, name: str, **properties: Any) -> None:
        if self.ctx.log is not None:
            events.emit(
                self.ctx.log, name, job_id=self.ctx.job_id, cid=self.ctx.org.cid, **properties
            )

    def fail(self, entry: PlanEntry, code: str, details: str = "", document_id: Any = None):
        self.result.counters.failed += 1
        self.result.failures.append(
            RecordFailure(entry.external_id, entry.crm_audit_id, str(code), details, document_id)
        )

    def see(self, entry: PlanEntry) -> None:
        """Count a plan entry that needs no write (skipped or failed in the plan)."""
        if entry.outcome == PlanOutcome.SKIPPED:
            self.result.counters.skipped += 1
            self.result.skipped_by_code[str(entry.code)] += 1
        else:
            self.fail(entry, str(entry.code or FailureCode.TRANSFORM_ERROR), entry.details)

    def complete(
        self,
        batch: list[PlanEntry],
        documents: list[dict[str, Any]],
        written: BulkUpsertResult,
        seen_up_to: int,
    ) -> bool:
        """Apply one written batch (in submission order); True when the halt rule says so."""
        ctx = self.ctx
        self.result.batches += 1
        for index, entry in enumerate(batch):
            if index in written.upserted:
                self.result.counters.migrated += 1
                self.writes.migrated += 1
            elif index in written.matched:
                self.result.counters.skipped += 1
                self.writes.skipped += 1
                self.result.skipped_by_code[str(SkipCode.DUPLICATE_EXTERNAL_ID)] += 1
            else:
                self.result.counters.failed += 1  # queued: failed until the retry (§6 [N14])
                self.writes.failed += 1
                self.queue.append((entry, documents[index]))
                self.result.queued += 1
        events.emit(  # per batch: to the compute log, not the Dagster event log
            events.record_log,
            events.BATCH_COMPLETED,
            job_id=ctx.job_id,
            cid=ctx.org.cid,
            batch_number=self.result.batches,
            records_in_batch=len(batch),
            failed_in_batch=len(written.errors),
            last_audit_id=batch[-1].crm_audit_id,
        )
        self.written += len(batch)
        self.result.last_audit_id = seen_up_to
        now = ctx.clock()
        self.result.window_seconds.append(round(now - self.last_done, 4))
        self.last_done = now
        if ctx.on_progress is not None and self.result.batches % self.progress_every == 0:
            ctx.on_progress(self.result)
        if ctx.max_write_rate_per_s:
            ahead = self.written / ctx.max_write_rate_per_s - (ctx.clock() - self.started)
            if ahead > 0:
                ctx.pause(ahead)  # §11 [N19]: the optional write-rate ceiling
        return self.writes.exceeds(ctx.halt_threshold)

    def retry_queue(self) -> None:
        """§6 end of run: each queued record once, individually; success moves it from
        failed to migrated (or skipped when it turns out to exist), else ``write_failed``."""
        for entry, document in self.queue:
            self.result.queue_retried += 1
            written = _attempt(self.ctx.write, [document], retry=True)
            if written.upserted or written.matched:
                self.result.counters.failed -= 1
                self.result.queue_recovered += 1
                if written.upserted:
                    self.result.counters.migrated += 1
                else:
                    self.result.counters.skipped += 1
                    self.result.skipped_by_code[str(SkipCode.DUPLICATE_EXTERNAL_ID)] += 1
            else:
                self.result.counters.failed -= 1  # re-counted as a final failure below
                code, details = str(FailureCode.WRITE_FAILED), written.errors.get(0, "")
                self.fail(entry, code, details, document.get("_id"))
                self.result.queue_left += 1
                self._emit(
                    events.RECORD_FAILED,
                    external_id=entry.external_id,
                    reason_code=str(FailureCode.WRITE_FAILED),
                )
        self.queue = []


def load_activity_logs(
    ctx: ActivityLoadContext, entries: Iterable[PlanEntry]
) -> ActivityLoadResult:
    """Write every ``ready`` entry of the plan (in ``audits.id`` order), count every entry.

    Every entry ends as migrated, skipped (its plan code, or ``duplicate_external_id`` when
    the key exists) or failed (its plan code, or ``write_failed``); after a halt the rest are
    ``not_attempted`` and the end-of-run queue stays (``queue_left``). A resumed job skips
    what its predecessor accounted for (``ResumePoint``). Never raises for a record.
    """
    loader = _Loader(ctx)
    result = loader.result
    writers = max(1, ctx.write_concurrency)
    batch: list[PlanEntry] = []
    in_flight: deque[tuple[list[PlanEntry], list[dict[str, Any]], Future, int]] = deque()
    seen_up_to: int | None = ctx.resume.last_audit_id if ctx.resume else None
    halted = False
    stream = iter(entries)

    def submit(pool: ThreadPoolExecutor) -> bool:
        """Send the pending batch; while ``writers`` batches are in flight, settle the oldest
        first (results applied in order). True when the halt rule stopped the load."""
        nonlocal batch
        documents = with_ids(_document(entry, ctx.resume) for entry in batch)
        resent = ctx.resume is not None and any(
            entry.external_id in ctx.resume.attempt_ids for entry in batch
        )
        future = pool.submit(write_batch, ctx.write, documents, recheck=resent)
        in_flight.append((batch, documents, future, seen_up_to or 0))
        batch = []
        while len(in_flight) >= writers:
            done, sent, future, up_to = in_flight.popleft()
            if loader.complete(done, sent, future.result(), up_to):
                return True
        return False

    with ThreadPoolExecutor(max_workers=writers) as pool:
        for entry in stream:
            if ctx.resume is not None and ctx.resume.done(entry.crm_audit_id, entry.external_id):
                continue
            if entry.outcome == PlanOutcome.READY:
                batch.append(entry)
            else:
                loader.see(entry)
            seen_up_to = max(seen_up_to or 0, entry.crm_audit_id)
            if len(batch) >= ctx.batch_size and submit(pool):
                halted = True
                break
        if not halted and batch:
            halted = submit(pool)
        while in_flight:  # written already: counted, even after a halt
            done, sent, future, up_to = in_flight.popleft()
            halted = loader.complete(done, sent, future.result(), up_to) or halted
        if not halted:
            result.last_audit_id = seen_up_to
            loader.retry_queue()
        if ctx.on_progress is not None:
            ctx.on_progress(result)
    if halted:
        result.status = LoadStatus.HALTED
        result.queue_left = len(loader.queue)
        for entry, document in loader.queue:
            code = str(FailureCode.WRITE_FAILED)
            result.failures.append(
                RecordFailure(entry.external_id, entry.crm_audit_id, code, "", document.get("_id"))
            )
        result.not_attempted = sum(
            1
            for entry in stream
            if ctx.resume is None or not ctx.resume.done(entry.crm_audit_id, entry.external_id)
        )
        loader._emit(events.HALTED, failure_rate=result.writes.failure_rate)
    result.duration_seconds = round(ctx.clock() - loader.started, 3)
    return result
