"""Validation of one CID (SPEC "Validation"): counts, match, failure rate, fidelity, error log.

Pure functions: ``build_report`` assembles the ``ValidationReport`` from what the asset read
(counts, the stored notes' digests, duplicates). Memory: ``index_stored`` keeps a compact
digest per stored note (never its content), the plans are streamed once against it, and
the load result is compact (counts, unwritten notes): nothing grows with a note's content
or holds the CID's documents. pandas writes the CSV.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd

from notes_pipeline.contact_notes.attachment_entries import held_assets, unavailable_assets
from notes_pipeline.contact_notes.reason_codes import FidelityCode
from notes_pipeline.contact_notes.records import (
    LoadResult,
    NormalizedNotes,
    NotePlan,
    ValidationReport,
)
from notes_pipeline.contact_notes.rules.fingerprint import SOURCE_FINGERPRINT, source_changed
from notes_pipeline.contact_notes.rules.html import content_hash
from notes_pipeline.core.rates import exceeds_failure_threshold, failure_rate_pct, pct
from notes_pipeline.core.vocabulary import (
    FINAL_OUTCOMES,
    LoadStatus,
    MonitorState,
    Outcome,
    PlanOutcome,
    RunCode,
)

KEY = "legacy_crm_note_id"
FIDELITY_FIELDS = ("contact_id", "owner_id", "legacy_owner_label", "created_at", "updated_at")
ERROR_LOG_COLUMNS = ["legacy_crm_note_id", "reason_code", "details"]
SUMMARY_IDS = 20  # drifted / mismatched ids listed in the Markdown summary (all: error log)


def outcome_counts(normalized: NormalizedNotes, load: LoadResult) -> Counter:
    """Source notes per final outcome (and ``not_attempted`` after a halt); they add up to the
    CID's source total (from the plan tally and the load's counts: no pass over the plans)."""
    counts: Counter = Counter({o: 0 for o in FINAL_OUTCOMES})
    for outcome in (PlanOutcome.OUT_OF_SCOPE, PlanOutcome.FAILED):
        counts[Outcome(outcome)] += normalized.count(outcome)
    counts.update({Outcome(k): v for k, v in load.counts.items() if v})
    return counts


def _missing(value: Any) -> bool:
    return value is None or value is pd.NaT or (isinstance(value, float) and value != value)


def _value_digest(value: Any) -> bytes:
    """8 bytes standing for ``value`` (equal values of one type, equal digests; every missing
    value — None, NaN, NaT — one digest)."""
    if _missing(value):
        return b"\0" * 8
    return hashlib.blake2b(repr(value).encode(), digest_size=8).digest()


def _fingerprint_key(value: Any) -> str | None:
    """A stored/planned source fingerprint shortened to ``<version>:<16 hex>`` (64 bits:
    enough to tell a change); None when absent."""
    if not isinstance(value, str):
        return None
    version, _, digest = value.partition(":")
    return f"{version}:{digest[:16]}" if digest else value


class StoredDigest(NamedTuple):
    """What the report keeps of one stored migrated note (never its content): ``fields``,
    8-byte digests of ``FIDELITY_FIELDS`` then the sanitized-content hash, concatenated; the
    shortened source ``fingerprint`` and ``updated_at`` (drift, ``source_changed``); the
    stored ``attachments`` array (() when none)."""

    fields: bytes
    fingerprint: str | None
    updated_at: Any
    attachments: tuple[Any, ...]


class StoredIndex(dict[str, StoredDigest]):
    """legacy id → ``StoredDigest`` of the company's migrated notes, plus ``duplicates``:
    the legacy ids stored more than once (SPEC "Validation" duplicate scan), found in the same
    pass."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.duplicates: set[str] = set()


def _field_digests(values: Sequence[Any]) -> bytes:
    return b"".join(_value_digest(v) for v in values)


def index_stored(documents: Iterable[Mapping[str, Any]]) -> StoredIndex:
    """One pass over the company's migrated documents (e.g. ``CdpMongo.iter_migrated``):
    legacy id → ``StoredDigest``. Memory: ~250 bytes per note plus its attachment entries,
    never the note content. A legacy id stored twice keeps its first document and is listed
    in ``duplicates`` (so the report needs no separate `$group` scan)."""
    index = StoredIndex()
    for doc in documents:
        key = doc.get(KEY)
        if key is None:
            continue
        if str(key) in index:
            index.duplicates.add(str(key))
            continue
        index[str(key)] = StoredDigest(
            _field_digests(
                [*(doc.get(f) for f in FIDELITY_FIELDS), content_hash(doc.get("note") or "")]
            ),
            _fingerprint_key(doc.get(SOURCE_FINGERPRINT)),
            doc.get("updated_at"),
            tuple(_attachments(doc)),
        )
    return index


_NAMES = (*FIDELITY_FIELDS, "note")  # "note": the sanitized-content hash


def _diff_rows(
    plans: Iterable[NotePlan], stored: StoredIndex
) -> Iterator[tuple[dict[str, str] | None, bool, int]]:
    """Per ready plan with a stored note, in plan order: (mismatch row or None, drifted,
    placeholders the stored note holds)."""
    for plan in plans:
        if not plan.ready or plan.document is None:
            continue
        held = stored.get(plan.legacy_crm_note_id)
        if held is None:
            continue
        planned = _field_digests(
            [*(plan.document.get(f) for f in FIDELITY_FIELDS), plan.content_hash]
        )
        fields = [
            name
            for i, name in enumerate(_NAMES)
            if planned[i * 8 : i * 8 + 8] != held.fields[i * 8 : i * 8 + 8]
        ]
        wanted = tuple(att.asset_id for att in plan.attachments)
        if held_assets(held.attachments, plan.attachments) != wanted:
            fields.append("attachments")
        unavailable = len(unavailable_assets(held.attachments))
        if not fields:
            yield None, False, unavailable
            continue
        drifted = source_changed(
            {
                SOURCE_FINGERPRINT: _fingerprint_key(plan.document.get(SOURCE_FINGERPRINT)),
                "updated_at": plan.document.get("updated_at"),
            },
            {SOURCE_FINGERPRINT: held.fingerprint, "updated_at": held.updated_at},
        )
        yield {KEY: plan.legacy_crm_note_id, "fields": ",".join(fields)}, drifted, unavailable


def _stored_index(documents: Iterable[Mapping[str, Any]] | StoredIndex) -> StoredIndex:
    return documents if isinstance(documents, dict) else index_stored(documents)


def fidelity_mismatches(
    plans: Iterable[NotePlan], documents: Iterable[Mapping[str, Any]] | StoredIndex
) -> list[dict[str, str]]:
    """Each stored migrated note vs its plan, keyed by legacy id (SPEC "Validation"): the
    fidelity fields, the sanitized-content hash and the attachments (the planned set, in plan
    order, vs what the document holds: each planned attachment exactly once, as its real entry
    or its placeholder, and nothing else; ``attachment_entries.held_assets``). Rows
    ``{legacy_crm_note_id, fields}`` (comma-separated field names; ids and names only), in plan
    order, whatever the cause (``split_by_cause`` tells drift from the write path).
    ``documents``: stored documents or their ``index_stored``; ``plans`` is read once."""
    return [row for row, _, _ in _diff_rows(plans, _stored_index(documents)) if row]


def _attachments(document: Mapping[str, Any]) -> list[Any]:
    """A stored note's attachments (FerretDB drops an empty array at insert: missing = [])."""
    value = document.get("attachments")
    return list(value) if isinstance(value, list) else []


@dataclass(frozen=True)
class Fidelity:
    """The CID's migrated notes vs their plans: ``mismatched`` (source unchanged: the write
    path, SPEC "fidelity" gate), ``drift`` (the CRM row changed after migration, issue #12
    item 2), rows ``{legacy_crm_note_id, fields}``; ``attachments_unavailable``: placeholders
    the stored notes still hold."""

    mismatched: list[dict[str, str]]
    drift: list[dict[str, str]]
    attachments_unavailable: int


def split_by_cause(
    plans: Iterable[NotePlan], documents: Iterable[Mapping[str, Any]] | StoredIndex
) -> Fidelity:
    """``fidelity_mismatches`` split by cause (``rules.fingerprint.source_changed``: the
    stored source fingerprint differs from the current one, or, without one, the CRM row's
    ``updated_at`` is later than the stored one → drift; otherwise a write-path mismatch),
    plus the placeholders the stored ready notes hold. One pass over ``plans`` (streamed:
    memory is the stored index plus the rows)."""
    mismatched, drift = [], []
    unavailable = 0
    for row, drifted, held in _diff_rows(plans, _stored_index(documents)):
        unavailable += held
        if row is not None:
            (drift if drifted else mismatched).append(row)
    return Fidelity(mismatched, drift, unavailable)


def error_log_csv(
    normalized: NormalizedNotes, load: LoadResult, fidelity: Fidelity | None = None
) -> tuple[bytes, int]:
    """The error log (SPEC "Validation"): CSV ``legacy_crm_note_id, reason_code, details``
    for every failed note, every note not attempted after a halt, every dropped attachment
    (and placeholder a re-run could not replace), then every write-path mismatch
    (``FIDELITY_MISMATCH``) and every drifted note (``SOURCE_DRIFT``), details
    ``fields=<names>``; ids, codes and field names only, never content. Returns the bytes and
    the row count."""
    rows = [[p.legacy_crm_note_id, p.reason_code, p.details] for p in normalized.failures]
    rows += [[o.legacy_crm_note_id, o.reason_code, o.details] for o in load.failed]
    rows += [
        [o.legacy_crm_note_id, LoadStatus.HALTED, "not attempted after halt"]
        for o in load.not_attempted
    ]
    rows += [
        [f.legacy_crm_note_id, f.reason_code, f"asset={f.asset_id} type={f.attachment_type}"]
        for f in load.attachment_failures
    ]
    if fidelity is not None:
        rows += [
            [m[KEY], FidelityCode.FIDELITY_MISMATCH, f"fields={m['fields']}"]
            for m in fidelity.mismatched
        ]
        rows += [
            [m[KEY], FidelityCode.SOURCE_DRIFT, f"fields={m['fields']}"] for m in fidelity.drift
        ]
    frame = pd.DataFrame(rows, columns=ERROR_LOG_COLUMNS).astype(str)
    return frame.to_csv(index=False, lineterminator="\r\n").encode(), len(rows)


def decide_status(
    *,
    halted: bool,
    skipped: bool,
    match_pct: float | None,
    counts: Counter,
    duplicates: int,
    mismatches: int,
    match_threshold_pct: float,
    failure_threshold_pct: float,
) -> MonitorState:
    """The CID's final monitor state (PRD §8, SPEC "Validation"). ``mismatches`` counts
    write-path mismatches only: drift (a CRM-side change) and unavailable attachments (PRD
    S02 ERR-2: not a note failure) leave the state to the SPEC rule and show as WARN checks."""
    if halted:
        return MonitorState.HALTED
    if skipped or match_pct is None:
        return MonitorState.COMPLETED_WITH_ERRORS
    failed = exceeds_failure_threshold(
        counts[Outcome.FAILED],
        counts[Outcome.MIGRATED],
        counts[Outcome.SKIPPED],
        failure_threshold_pct,
    )
    if match_pct >= match_threshold_pct and not failed and not duplicates and not mismatches:
        return MonitorState.COMPLETED_SUCCESS
    return MonitorState.COMPLETED_WITH_ERRORS


@dataclass(frozen=True)
class ReportInputs:
    """What ``validation_report`` read for one CID, besides the two upstream records."""

    source_count: int | None  # in-scope notes recounted in the CRM; None = unavailable
    target_count: int | None  # migrated notes of the company in CDP; None = unavailable
    stored: StoredIndex | list[dict[str, Any]]  # index_stored of the company's migrated notes
    duplicate_legacy_ids: list[str]
    error_log_key: str
    match_threshold_pct: float
    failure_threshold_pct: float
    duration_seconds: float


def build_report(
    normalized: NormalizedNotes, load: LoadResult, inputs: ReportInputs
) -> tuple[ValidationReport, bytes]:
    """The CID's ``ValidationReport`` and its error-log CSV bytes (pure)."""
    org = normalized.org
    skipped = inputs.source_count is None or inputs.target_count is None
    match = None if skipped else pct(inputs.target_count, inputs.source_count)
    counts = outcome_counts(normalized, load)
    fidelity = split_by_cause(normalized.plans, inputs.stored)  # the one pass over the plans
    csv_bytes, error_rows = error_log_csv(normalized, load, fidelity)
    ready = normalized.count(PlanOutcome.READY)
    tally = normalized.tally
    assert tally is not None  # NormalizedNotes always has one
    report = ValidationReport(
        cid=org.cid,
        company_sso_id=org.company_sso_id,
        status=decide_status(
            halted=load.status == LoadStatus.HALTED,
            skipped=skipped,
            match_pct=match,
            counts=counts,
            duplicates=len(inputs.duplicate_legacy_ids),
            mismatches=len(fidelity.mismatched),
            match_threshold_pct=inputs.match_threshold_pct,
            failure_threshold_pct=inputs.failure_threshold_pct,
        ),
        source_count=inputs.source_count,
        target_count=inputs.target_count,
        match_pct=match,
        failure_rate_pct=failure_rate_pct(
            counts[Outcome.FAILED], counts[Outcome.MIGRATED], counts[Outcome.SKIPPED]
        ),
        outcomes={str(k): v for k, v in counts.items()},
        failed_by_reason={
            str(k): v for k, v in (normalized.failed_by_reason + load.failed_by_reason).items()
        },
        attachments_planned=load.attachments_planned,
        attachments_copied=load.attachments_copied,
        attachment_success_pct=pct(load.attachments_copied, load.attachments_planned),
        owner_resolution_pct=pct(ready - tally.owners_unresolved, ready),
        checkins_dropped=tally.checkins_dropped,
        duplicate_legacy_ids=inputs.duplicate_legacy_ids,
        fidelity_mismatches=fidelity.mismatched,
        source_drift=fidelity.drift,
        attachments_repaired=load.attachments_repaired,
        attachments_unavailable=fidelity.attachments_unavailable,
        validation_skipped=skipped,
        error_log_key=inputs.error_log_key,
        error_rows=error_rows,
        duration_seconds=round(load.duration_seconds + inputs.duration_seconds, 3),
    )
    return report, csv_bytes


def summary_markdown(report: ValidationReport) -> str:
    """The UI summary: counts, reasons, rates, status. Ids and codes only."""
    rows = [
        ("source (in-scope, recounted)", report.source_count),
        ("target (migrated in CDP)", report.target_count),
        ("match_pct", report.match_pct),
        ("failure_rate", f"{report.failure_rate_pct} %"),
        *(
            (name, report.outcomes.get(name, 0))
            for name in (*FINAL_OUTCOMES, Outcome.NOT_ATTEMPTED)
        ),
        (
            "attachments re-linked",
            f"{report.attachments_copied} / {report.attachments_planned} "
            f"({report.attachment_success_pct} %)",
        ),
        ("attachments repaired (placeholders replaced)", report.attachments_repaired),
        ("attachments unavailable (placeholders)", report.attachments_unavailable),
        ("owner resolution", f"{report.owner_resolution_pct} %"),
        ("check-ins dropped", report.checkins_dropped),
        ("duplicate legacy ids", len(report.duplicate_legacy_ids)),
        ("fidelity mismatches", len(report.fidelity_mismatches)),
        ("source drift (CRM changed after migration)", len(report.source_drift)),
        ("duration", f"{report.duration_seconds} s"),
    ]
    lines = [f"### CID {report.cid}: `{report.status}`", "", "| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += ["", "**Failures by reason code**", ""]
    if report.failed_by_reason:
        lines += [f"- `{code}`: {n}" for code, n in sorted(report.failed_by_reason.items())]
    else:
        lines.append("- none")
    for title, rows_ in (
        (f"Fidelity mismatches (`{FidelityCode.FIDELITY_MISMATCH}`)", report.fidelity_mismatches),
        (f"Source drift (`{FidelityCode.SOURCE_DRIFT}`, for Ops review)", report.source_drift),
    ):
        if rows_:
            lines += ["", f"**{title}**", ""]
            lines += [f"- `{r[KEY]}`: {r['fields']}" for r in rows_[:SUMMARY_IDS]]
            if len(rows_) > SUMMARY_IDS:
                lines.append(f"- … {len(rows_) - SUMMARY_IDS} more in the error log")
    if report.validation_skipped:
        lines += ["", f"`{RunCode.VALIDATION_SKIPPED}`: a count was unavailable after retries."]
    return "\n".join(lines)
