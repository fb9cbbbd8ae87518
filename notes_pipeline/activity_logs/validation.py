"""The activity-log validation report (SPEC-activity-logs §7 [N20], §6 states), as pure
functions over streams: the plan, the load result and the stored documents.

Memory: ~16 bytes per stored document — its audit id (int64) and an 8-byte digest (uint64)
in two sorted numpy arrays — never the documents; the plan is looked up by binary search.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from notes_pipeline.activity_logs.load import ActivityLoadResult
from notes_pipeline.activity_logs.records import (
    JobStatus,
    PlanEntry,
    PlanOutcome,
    SkipCode,
)
from notes_pipeline.activity_logs.summary import PlanTally
from notes_pipeline.core.rates import pct

CSV_COLUMNS = ("external_id", "crm_audit_id", "reason_code", "details")
EXTERNAL_ID_PREFIX = "crm_audit:"
WORST = 20  # ids listed per finding
LOOKUP_CHUNK = 4096  # ready plan entries looked up per binary search call
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: fields written per run, not per record: never part of the fidelity comparison
RUN_FIELDS = (("metadata", "job_id"),)


def _present(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _present(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list):
        return [_present(v) for v in value]
    return value


def comparable(document: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` without ``_id``, the per-run fields (``metadata.job_id``) and map entries
    that are null or ``[]`` (FerretDB 1.x drops those from ``$setOnInsert``; readers treat a
    missing field as null/empty, docs/MONGODB.md)."""
    doc = {k: v for k, v in document.items() if k != "_id"}
    for outer, inner in RUN_FIELDS:
        if isinstance(doc.get(outer), Mapping):
            doc[outer] = {k: v for k, v in doc[outer].items() if k != inner}
    return _present(doc)


def digest(document: Mapping[str, Any]) -> bytes:
    """8-byte fingerprint of ``comparable(document)`` (key order and ``_id`` ignored)."""
    text = json.dumps(comparable(document), sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def audit_id_of(external_id: object) -> int | None:
    """``crm_audit:<id>`` → id; None for anything else (also a tail ``int`` cannot read:
    digits that are not decimal, e.g. ``²``, or more than ``int``'s digit limit)."""
    text = str(external_id or "")
    tail = text.removeprefix(EXTERNAL_ID_PREFIX)
    if not (text.startswith(EXTERNAL_ID_PREFIX) and tail.isdecimal()):
        return None
    try:
        return int(tail)
    except ValueError:  # beyond sys.get_int_max_str_digits()
        return None


def digest_value(document: Mapping[str, Any]) -> int:
    """``digest(document)`` as an unsigned 64-bit integer (big-endian): equal digests, equal
    values. What ``StoredIndex`` keeps per document."""
    return int.from_bytes(digest(document), "big")


def canonical_external_id(audit_id: int) -> str:
    """The external id the loader writes for ``audit_id``: ``crm_audit:<id>``."""
    return f"{EXTERNAL_ID_PREFIX}{audit_id}"


def fits_int64(audit_id: int) -> bool:
    """True when ``audit_id`` fits a signed 64-bit integer (every ``audits.id`` does)."""
    return INT64_MIN <= audit_id <= INT64_MAX


def first_occurrences(sorted_ids: np.ndarray) -> np.ndarray:
    """Bool array, shape of ``sorted_ids`` (ascending): True where an id differs from the
    one before it, i.e. at the first of each run of equal ids."""
    first = np.ones(len(sorted_ids), dtype=bool)
    np.not_equal(sorted_ids[1:], sorted_ids[:-1], out=first[1:])
    return first


@dataclass
class StoredIndex:
    """What the report keeps of the stored documents: ~16 bytes per keyed document.

    * ``ids``: int64 array, shape (k,), ascending and unique — the audit ids of the documents
      whose ``external_id`` is ``crm_audit:<id>``;
    * ``digests``: uint64 array, shape (k,) — ``digests[i]`` is the ``digest_value`` of the
      first document read with ``ids[i]``;
    * ``duplicates``: the ``external_id`` of every later document of an audit id already
      read, in read order (a third copy is listed twice);
    * ``unkeyed``: tagged documents without a ``crm_audit:<id>`` external id; ``scanned``:
      every document read;
    * ``wide``: audit id → digest value for ids beyond int64 (the loader writes none; kept so
      that the report stays exact for any stored external id).
    """

    ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    digests: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    duplicates: list[str] = field(default_factory=list)
    unkeyed: int = 0  # tagged documents without a crm_audit external_id
    scanned: int = 0
    wide: dict[int, int] = field(default_factory=dict)

    @property
    def distinct(self) -> int:
        """Distinct audit ids stored."""
        return len(self.ids) + len(self.wide)

    def lookup(self, audit_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Binary search of ``audit_ids`` (m ints): ``(found, values)``, a bool and a uint64
        array of shape (m,); ``values[j]`` is the stored digest value of ``audit_ids[j]``, 0
        where not found."""
        try:
            keys = np.array(audit_ids, dtype=np.int64).reshape(-1)
        except OverflowError:  # an id beyond int64: one at a time
            pairs = [self._lookup_one(audit_id) for audit_id in audit_ids]
            return (
                np.array([hit for hit, _ in pairs], dtype=bool),
                np.array([value for _, value in pairs], dtype=np.uint64),
            )
        at = np.searchsorted(self.ids, keys)
        found = at < len(self.ids)
        found[found] = self.ids[at[found]] == keys[found]
        values = np.zeros(len(keys), dtype=np.uint64)
        values[found] = self.digests[at[found]]
        return found, values

    def _lookup_one(self, audit_id: int) -> tuple[bool, int]:
        if not fits_int64(audit_id):
            return audit_id in self.wide, self.wide.get(audit_id, 0)
        found, values = self.lookup([audit_id])
        return bool(found[0]), int(values[0])

    def digest_of(self, audit_id: int) -> bytes | None:
        """The stored ``digest`` (8 bytes) of ``audit_id``'s first document, None if none."""
        found, value = self._lookup_one(audit_id)
        return int(value).to_bytes(8, "big") if found else None


class _Collector:
    """``index_stored``'s state while streaming: an audit id and a digest value per keyed
    document in read order (``array`` buffers, 8 + 8 bytes), sorted once at the end."""

    def __init__(self) -> None:
        self.ids: array[int] = array("q")
        self.values: array[int] = array("Q")
        self.odd: dict[int, str] = {}  # read position → external id, when not canonical
        self.wide_dups: list[tuple[int, int]] = []  # (read position, audit id) beyond int64
        self.index = StoredIndex()

    def add(self, doc: Mapping[str, Any]) -> None:
        """Count ``doc``; keep its audit id and digest value when it is keyed."""
        index = self.index
        index.scanned += 1
        external_id = doc.get("external_id")
        audit_id = audit_id_of(external_id)
        if audit_id is None:
            index.unkeyed += 1
            return
        position = len(self.ids)
        text = str(external_id)
        if text != canonical_external_id(audit_id):
            self.odd[position] = text
        if fits_int64(audit_id):
            self.ids.append(audit_id)
            self.values.append(digest_value(doc))
            return
        # beyond int64: a unique negative placeholder keeps positions = buffer indices
        if audit_id in index.wide:
            self.wide_dups.append((position, audit_id))
        else:
            index.wide[audit_id] = digest_value(doc)
        self.ids.append(-1 - position)
        self.values.append(0)

    def finish(self) -> StoredIndex:
        """Sort once (stable: the first document of an id keeps its digest); releases the
        buffers as it goes. Peak ≈ 33 bytes per keyed document, held after: 16."""
        index = self.index
        keys = np.frombuffer(self.ids, dtype=np.int64)
        del self.ids  # ``keys`` holds the buffer now
        order = np.argsort(keys, kind="stable")
        ids = keys[order]
        del keys  # frees the id buffer
        values = np.frombuffer(self.values, dtype=np.uint64)
        del self.values
        digests = values[order]
        del values
        first = first_occurrences(ids)
        dups: list[tuple[int, int]] = list(self.wide_dups)
        if not first.all():
            later = ~first
            dups += zip(order[later].tolist(), ids[later].tolist(), strict=True)
            ids, digests = ids[first], digests[first]
        del order, first
        placeholders = int(np.searchsorted(ids, 0))  # the negative ones, first after the sort
        index.ids, index.digests = ids[placeholders:], digests[placeholders:]
        index.duplicates = [
            self.odd.get(position, canonical_external_id(audit_id))
            for position, audit_id in sorted(dups)
        ]
        return index


def index_stored(documents: Iterable[Mapping[str, Any]]) -> StoredIndex:
    """One pass over the company's migrated documents (streamed), then one sort: the digest of
    each audit id's first document and the duplicate external ids (``StoredIndex``)."""
    collector = _Collector()
    for doc in documents:
        collector.add(doc)
    return collector.finish()


@dataclass
class FidelityTally:
    """One pass over the plan for what only the report needs: each ready entry's document
    compared with the stored one, and the unmapped skips' rows for the error CSV. The plan's
    counts come from its own ``summary.PlanTally``."""

    ready: int = 0
    stored_of_ready: int = 0
    mismatched: list[str] = field(default_factory=list)
    mismatched_count: int = 0
    unmapped_rows: list[tuple[str, int, str]] = field(default_factory=list)


def compare_plan(entries: Iterable[PlanEntry], stored: StoredIndex) -> FidelityTally:
    """Compare each ready entry's document with the stored one (by digest value), looking the
    ready entries up ``LOOKUP_CHUNK`` at a time; the plan is read once, in order."""
    tally = FidelityTally()
    pending: list[PlanEntry] = []
    for entry in entries:
        if entry.code == SkipCode.UNMAPPED_ACTION_TYPE:
            tally.unmapped_rows.append((entry.external_id, entry.crm_audit_id, str(entry.code)))
        if entry.outcome != PlanOutcome.READY or entry.document is None:
            continue
        tally.ready += 1
        pending.append(entry)
        if len(pending) == LOOKUP_CHUNK:
            _compare_ready(pending, stored, tally)
            pending = []
    _compare_ready(pending, stored, tally)
    return tally


def _compare_ready(entries: list[PlanEntry], stored: StoredIndex, tally: FidelityTally) -> None:
    """Tally ready ``entries`` (in plan order) against ``stored``; digests only the entries
    that have a stored document."""
    if not entries:
        return
    found, held = stored.lookup([entry.crm_audit_id for entry in entries])
    for entry, hit, value in zip(entries, found.tolist(), held.tolist(), strict=True):
        if not hit:
            continue
        tally.stored_of_ready += 1
        if value != digest_value(entry.document):  # type: ignore[arg-type]
            tally.mismatched_count += 1
            if len(tally.mismatched) < WORST:
                tally.mismatched.append(entry.external_id)


@dataclass
class ActivityLogReport:
    """``activity_log_validation_report`` (§7): the CID's final state and its evidence.

    ``accuracy_pct`` = ``target_count / source_count × 100`` (None: the count was unavailable,
    ``VALIDATION_SKIPPED``); ``target_count`` = the company's ``source_tag = crm_migration``
    documents (what ``countDocuments`` of that filter returns, counted in the fidelity read);
    ``source_count`` = in-scope audits minus unmapped skips [N20].
    """

    cid: str
    job_id: str
    status: JobStatus
    source_count: int
    target_count: int | None
    accuracy_pct: float | None
    outcomes: dict[str, int]
    skipped_by_code: dict[str, int]
    failed_by_code: dict[str, int]
    contact_not_found: int
    contact_not_found_pct: float
    duplicates: list[str]
    mismatched: list[str]
    mismatched_count: int
    unkeyed_documents: int
    queue_left: int
    failure_rate: float
    by_category_action: dict[str, int]
    by_actor_case: dict[str, int]
    error_rows: int = 0
    validation_skipped: bool = False
    duration_seconds: float = 0.0

    @property
    def halted(self) -> bool:
        """The load was halted."""
        return self.status == JobStatus.HALTED

    @property
    def actor_unresolved_pct(self) -> float:
        """Actor cases A3 + A4, percent of the audits that reached the actor rule (§9)."""
        unresolved = sum(n for case, n in self.by_actor_case.items() if case in ("A3", "A4"))
        return pct(unresolved, sum(self.by_actor_case.values())) if self.by_actor_case else 0.0


@dataclass(frozen=True)
class Thresholds:
    """§6/§7 pass marks, percent."""

    accuracy_pct: float = 99.0
    contact_not_found_pct: float = 1.0


def final_state(
    load: ActivityLoadResult,
    accuracy_pct: float | None,
    contact_not_found_pct: float,
    duplicates: int,
    mismatched: int,
    thresholds: Thresholds,
) -> JobStatus:
    """§6 states: ``halted`` when the load halted; ``completed_success`` when accuracy ≥ the
    pass mark, ``contact_not_found`` below its share, the end-of-run queue empty, and no
    duplicate or fidelity mismatch; else ``completed_with_errors``."""
    if load.halted:
        return JobStatus.HALTED
    success = (
        accuracy_pct is not None
        and accuracy_pct >= thresholds.accuracy_pct
        and contact_not_found_pct < thresholds.contact_not_found_pct
        and load.queue_left == 0
        and duplicates == 0
        and mismatched == 0
    )
    return JobStatus.COMPLETED_SUCCESS if success else JobStatus.COMPLETED_WITH_ERRORS


def build_report(
    cid: str,
    load: ActivityLoadResult,
    plan: PlanTally,
    fidelity: FidelityTally,
    stored: StoredIndex,
    target_count: int | None,
    thresholds: Thresholds,
) -> ActivityLogReport:
    """The report from the pieces (no I/O). ``plan`` is the plan's own tally: [N20] source
    COUNT = its in-scope audits (all but ``unmapped_action_type`` skips)."""
    source = plan.in_scope
    accuracy = None if target_count is None else pct(target_count, source)
    not_found_pct = pct(plan.contact_not_found, source) if source else 0.0
    counters = load.counters
    status = final_state(
        load,
        accuracy,
        not_found_pct,
        len(stored.duplicates),
        fidelity.mismatched_count,
        thresholds,
    )
    return ActivityLogReport(
        cid=cid,
        job_id=load.job_id,
        status=status,
        source_count=source,
        target_count=target_count,
        accuracy_pct=accuracy,
        outcomes={
            "migrated": counters.migrated,
            "skipped": counters.skipped,
            "failed": counters.failed,
            "not_attempted": load.not_attempted,
        },
        skipped_by_code=dict(sorted(load.skipped_by_code.items())),
        failed_by_code=load.failed_by_code(),
        contact_not_found=plan.contact_not_found,
        contact_not_found_pct=not_found_pct,
        duplicates=stored.duplicates[:WORST],
        mismatched=fidelity.mismatched,
        mismatched_count=fidelity.mismatched_count,
        unkeyed_documents=stored.unkeyed,
        queue_left=load.queue_left,
        failure_rate=counters.failure_rate,
        by_category_action=dict(sorted(plan.category_actions.items())),
        by_actor_case=dict(sorted(plan.actor_cases.items())),
        validation_skipped=target_count is None,
    )


def error_csv(load: ActivityLoadResult, tally: FidelityTally) -> tuple[bytes, int]:
    """The error CSV (§7): one row per final failure and per unmapped skip —
    ``external_id, crm_audit_id, reason_code, details`` (ids and codes only). (bytes, rows)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    rows = 0
    for failure in load.failures:
        writer.writerow(
            (failure.external_id, failure.crm_audit_id, failure.reason_code, failure.details)
        )
        rows += 1
    for external_id, audit_id, code in tally.unmapped_rows:
        writer.writerow((external_id, audit_id, code, ""))
        rows += 1
    return out.getvalue().encode(), rows


def summary_markdown(report: ActivityLogReport) -> str:
    """The Markdown summary Ops read before cutover (counts, rates, codes; no values)."""
    accuracy = (
        "skipped (VALIDATION_SKIPPED)" if report.accuracy_pct is None else report.accuracy_pct
    )
    lines = [
        f"### CID {report.cid}: **{report.status}**",
        "",
        "| figure | value |",
        "|---|---|",
        f"| accuracy_pct (target / source) | {accuracy} ({report.target_count} / "
        f"{report.source_count}) |",
        *(f"| {k} | {v} |" for k, v in report.outcomes.items()),
        f"| failure_rate | {report.failure_rate} |",
        f"| contact_not_found | {report.contact_not_found} ({report.contact_not_found_pct} %) |",
        f"| duplicates | {len(report.duplicates)} |",
        f"| fidelity mismatches | {report.mismatched_count} |",
        f"| end-of-run queue left | {report.queue_left} |",
        f"| error CSV rows | {report.error_rows} |",
    ]
    for title, counts in (
        ("skipped by code", report.skipped_by_code),
        ("failed by code", report.failed_by_code),
    ):
        if counts:
            lines += ["", f"**{title}:** " + ", ".join(f"`{k}` {v}" for k, v in counts.items())]
    return "\n".join(lines)
