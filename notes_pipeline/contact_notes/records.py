"""The contact-notes family's stage records and their derived properties (picklable, no Dagster)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from notes_pipeline.contact_notes.reason_codes import NoteCode
from notes_pipeline.core.chunks import ChunkedRecords
from notes_pipeline.core.crm_records import CrmNote, Organization
from notes_pipeline.core.rates import failure_rate_pct, pct
from notes_pipeline.core.vocabulary import LoadStatus, MonitorState, Outcome, PlanOutcome


@dataclass(frozen=True)
class PlannedAttachment:
    """An attachment the loader will copy to ``target_key`` and link as ``proxy_url``."""

    asset_id: str
    source_url: str
    cdp_type: str
    file_name: str  # never None: derived from the asset id when the CRM has none
    target_key: str
    proxy_url: str
    content_type: str | None


@dataclass(frozen=True)
class DroppedAttachment:
    """An attachment left out of the note, with its reason code (details: ids only)."""

    asset_id: str
    reason_code: str
    details: str
    attachment_type: str = "voice_note"  # the CDP type it would have had ("unknown": unread)


@dataclass(frozen=True)
class OwnerResolution:
    """The CDP owner of a note: an SSO uuid, or a label to show instead."""

    owner_id: str | None
    legacy_owner_label: str | None

    @property
    def resolved(self) -> bool:
        """True when the owner is an SSO uuid (not a label)."""
        return self.owner_id is not None


@dataclass(frozen=True)
class NotePlan:
    """normalized_notes' verdict on one source note, and the CDP document when ready."""

    legacy_crm_note_id: str
    outcome: PlanOutcome
    reason_code: str | None = None
    details: str = ""
    document: dict[str, Any] | None = None
    attachments: tuple[PlannedAttachment, ...] = ()
    dropped_attachments: tuple[DroppedAttachment, ...] = ()
    owner_resolved: bool = True
    crm_user_id: int | None = None
    checkin_dropped: bool = False
    content_hash: str | None = None

    @property
    def ready(self) -> bool:
        """The plan's document is to be written."""
        return self.outcome == PlanOutcome.READY

    @property
    def failed(self) -> bool:
        """The note failed a rule; ``reason_code`` says which."""
        return self.outcome == PlanOutcome.FAILED


@dataclass
class NoteOutcome:
    """Final outcome of one source note after loading."""

    legacy_crm_note_id: str
    outcome: Outcome
    reason_code: str | None = None
    details: str = ""


@dataclass
class AttachmentFailure:
    """One attachment dropped from its (still written) note, with its reason code."""

    legacy_crm_note_id: str
    asset_id: str
    attachment_type: str
    reason_code: str
    details: str = ""


@dataclass
class LoadResult:
    """What cdp_notes_loaded did for one CID, compact whatever the CID's size.

    ``counts``: ready notes per outcome (MIGRATED / SKIPPED / FAILED / NOT_ATTEMPTED);
    ``unwritten``: one ``NoteOutcome`` per ready note that was not written — FAILED
    (BATCH_INSERT_FAILED, with details) or NOT_ATTEMPTED after a halt — in load order; notes
    written or skipped are counted only (the report reads their documents from CDP).
    ``attachment_failures``: dropped attachments (rule drops first, then copy/repair failures).
    ``attachments_copied``: planned attachments this run copied and linked (a copy whose
    placeholder could not be replaced is a failure instead); ``attachments_repaired``: of
    those, placeholders of already-migrated notes replaced by their real entry (issue #12).
    ``owners_unresolved`` / ``checkins_dropped``: of the ready notes streamed.
    """

    cid: str
    company_sso_id: str
    status: LoadStatus
    counts: Counter = field(default_factory=Counter)
    unwritten: list[NoteOutcome] = field(default_factory=list)
    attachment_failures: list[AttachmentFailure] = field(default_factory=list)
    attachments_planned: int = 0
    attachments_copied: int = 0
    attachments_repaired: int = 0
    batches: int = 0
    duration_seconds: float = 0.0

    @classmethod
    def from_outcomes(
        cls,
        cid: str,
        company_sso_id: str,
        status: LoadStatus,
        outcomes: Iterable[NoteOutcome],
        **fields: Any,
    ) -> LoadResult:
        """A result that recorded ``outcomes`` in order (tests, tools); ``fields`` are the
        other attributes."""
        result = cls(cid, company_sso_id, status, **fields)
        for outcome in outcomes:
            result.record(outcome)
        return result

    def record(self, outcome: NoteOutcome) -> None:
        """Count ``outcome``; keep it when the note was not written (FAILED, NOT_ATTEMPTED)."""
        self.counts[Outcome(outcome.outcome)] += 1
        if outcome.outcome in (Outcome.FAILED, Outcome.NOT_ATTEMPTED):
            self.unwritten.append(outcome)

    def count(self, outcome: Outcome) -> int:
        """Notes of this load that ended in ``outcome``."""
        return self.counts.get(Outcome(outcome), 0)

    @property
    def failed(self) -> list[NoteOutcome]:
        """Notes whose write failed (BATCH_INSERT_FAILED)."""
        return [o for o in self.unwritten if o.outcome == Outcome.FAILED]

    @property
    def not_attempted(self) -> list[NoteOutcome]:
        """Ready notes left unwritten after a halt, in load order."""
        return [o for o in self.unwritten if o.outcome == Outcome.NOT_ATTEMPTED]

    @property
    def failed_by_reason(self) -> Counter:
        """Write failures per reason code."""
        return Counter(o.reason_code for o in self.failed)

    @property
    def load_failure_rate_pct(self) -> float:
        """Write failures over the notes attempted so far, in percent (the halt rule's rate)."""
        return failure_rate_pct(
            self.count(Outcome.FAILED), self.count(Outcome.MIGRATED), self.count(Outcome.SKIPPED)
        )


@dataclass(frozen=True)
class CrmExtract:
    """crm_notes_raw: one CID's organization and every note of it, in id order.

    ``notes``: a ``ChunkedRecords[CrmNote]`` handle in a run (iterate it: one CRM page in
    memory at a time), or any sequence of notes (tests, tools).
    """

    org: Organization
    notes: ChunkedRecords[CrmNote] | tuple[CrmNote, ...]


@dataclass
class PlanTally:
    """One pass over a CID's plans: what the metadata, checks, load and report need, without
    the plans. ``failures``: the FAILED plans (no document: small), in source order;
    ``by_outcome`` plans per ``PlanOutcome``; ``out_of_scope_by_reason`` per scope code;
    over READY plans: ``owners_unresolved``, ``checkins_dropped``, ``attachments_planned``,
    ``attachments_dropped``."""

    total: int = 0
    by_outcome: Counter = field(default_factory=Counter)
    out_of_scope_by_reason: Counter = field(default_factory=Counter)
    failures: list[NotePlan] = field(default_factory=list)
    owners_unresolved: int = 0
    checkins_dropped: int = 0
    attachments_planned: int = 0
    attachments_dropped: int = 0

    def add(self, plan: NotePlan) -> None:
        """Count one plan (the tally is built while the plans are written)."""
        self.total += 1
        self.by_outcome[PlanOutcome(plan.outcome)] += 1
        if plan.failed:
            self.failures.append(plan)
        elif plan.outcome == PlanOutcome.OUT_OF_SCOPE:
            self.out_of_scope_by_reason[plan.reason_code] += 1
        elif plan.ready:
            self.owners_unresolved += not plan.owner_resolved
            self.checkins_dropped += plan.checkin_dropped
            self.attachments_planned += len(plan.attachments)
            self.attachments_dropped += len(plan.dropped_attachments)

    @classmethod
    def of(cls, plans: Iterable[NotePlan]) -> PlanTally:
        """The tally of ``plans`` (one pass)."""
        tally = cls()
        for plan in plans:
            tally.add(plan)
        return tally


@dataclass(frozen=True)
class NormalizedNotes:
    """normalized_notes: one plan per source note of the CID, in source order.

    ``plans``: a ``ChunkedRecords[NotePlan]`` handle in a run, or any sequence (tests);
    ``tally``: their one-pass ``PlanTally`` (computed from ``plans`` when not given). Counts
    and failures come from the tally; ``iter_ready()`` streams the ready plans (memory: one
    frame); ``ready`` materializes them (tests and tools only).
    """

    org: Organization
    plans: ChunkedRecords[NotePlan] | tuple[NotePlan, ...]
    tally: PlanTally | None = None

    def __post_init__(self) -> None:
        if self.tally is None:
            object.__setattr__(self, "tally", PlanTally.of(self.plans))

    @property
    def _tally(self) -> PlanTally:
        assert self.tally is not None  # set by __post_init__
        return self.tally

    def count(self, outcome: PlanOutcome) -> int:
        """Plans with ``outcome``."""
        return self._tally.by_outcome.get(PlanOutcome(outcome), 0)

    @property
    def total(self) -> int:
        """Source notes (plans) of the CID."""
        return self._tally.total

    def iter_ready(self) -> Iterator[NotePlan]:
        """Plans to write, in source order, streamed (raises ``ChunksMissing`` when the
        chunk files are gone)."""
        return (p for p in self.plans if p.ready)

    @property
    def ready(self) -> list[NotePlan]:
        """Plans to write, in source order (materialized: tests and tools)."""
        return list(self.iter_ready())

    @property
    def failures(self) -> list[NotePlan]:
        """Plans that failed a rule."""
        return self._tally.failures

    @property
    def failed_by_reason(self) -> Counter:
        """Planning failures per reason code."""
        return Counter(p.reason_code for p in self.failures)

    @property
    def in_scope(self) -> int:
        """Source notes not out of scope (SPEC rule 1)."""
        return self.total - self.count(PlanOutcome.OUT_OF_SCOPE)

    @property
    def contact_misses(self) -> list[str]:
        """Legacy ids of the notes whose contact is not in CDP (CONTACT_NOT_MAPPED)."""
        return [
            p.legacy_crm_note_id
            for p in self.failures
            if p.reason_code == NoteCode.CONTACT_NOT_MAPPED
        ]

    @property
    def contact_coverage_pct(self) -> float:
        """In-scope notes that map to a CDP contact, in percent (SPEC gate 1)."""
        return pct(self.in_scope - len(self.contact_misses), self.in_scope)

    @property
    def normalization_failure_rate_pct(self) -> float:
        """Planning failures over in-scope notes, in percent (SPEC gate 2)."""
        return pct(len(self.failures), self.in_scope) if self.in_scope else 0.0


@dataclass
class ValidationReport:
    """validation_report: the CID's recount, rates (percent), fidelity and final state.

    ``fidelity_mismatches``: migrated notes that differ from the plan of an unchanged source
    (the write path); ``source_drift``: those whose CRM row changed after migration. Rows
    ``{legacy_crm_note_id, fields}`` (field names only). ``attachments_unavailable``:
    placeholders the CID's stored notes still hold; ``attachments_repaired``: placeholders
    this run replaced.
    """

    cid: str
    company_sso_id: str
    status: MonitorState
    source_count: int | None
    target_count: int | None
    match_pct: float | None
    failure_rate_pct: float
    outcomes: dict[str, int]
    failed_by_reason: dict[str, int]
    attachments_planned: int
    attachments_copied: int
    attachment_success_pct: float
    owner_resolution_pct: float
    checkins_dropped: int
    duplicate_legacy_ids: list[str] = field(default_factory=list)
    fidelity_mismatches: list[dict[str, str]] = field(default_factory=list)
    source_drift: list[dict[str, str]] = field(default_factory=list)
    attachments_repaired: int = 0
    attachments_unavailable: int = 0
    validation_skipped: bool = False
    error_log_key: str | None = None
    error_rows: int = 0
    duration_seconds: float = 0.0
