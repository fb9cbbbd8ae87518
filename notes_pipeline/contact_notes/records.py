"""The contact-notes family's stage records and their derived properties (picklable, no Dagster)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from notes_pipeline.contact_notes.reason_codes import NoteCode
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
    """What cdp_notes_loaded did for one CID: an outcome per ready note, dropped attachments.

    ``attachments_copied``: planned attachments this run copied and linked (a copy whose
    placeholder could not be replaced is a failure instead); ``attachments_repaired``: of
    those, placeholders of already-migrated notes replaced by their real entry (issue #12).
    """

    cid: str
    company_sso_id: str
    status: LoadStatus
    outcomes: list[NoteOutcome] = field(default_factory=list)
    attachment_failures: list[AttachmentFailure] = field(default_factory=list)
    attachments_planned: int = 0
    attachments_copied: int = 0
    attachments_repaired: int = 0
    batches: int = 0
    duration_seconds: float = 0.0

    def count(self, outcome: Outcome) -> int:
        """Notes of this load that ended in ``outcome``."""
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    @property
    def failed(self) -> list[NoteOutcome]:
        """Notes whose write failed (BATCH_INSERT_FAILED)."""
        return [o for o in self.outcomes if o.outcome == Outcome.FAILED]

    @property
    def failed_by_reason(self) -> Counter:
        """Write failures per reason code."""
        return Counter(o.reason_code for o in self.failed)

    @property
    def load_failure_rate_pct(self) -> float:
        """Write failures over the notes attempted so far, in percent (the halt rule's rate)."""
        return failure_rate_pct(
            len(self.failed), self.count(Outcome.MIGRATED), self.count(Outcome.SKIPPED)
        )


@dataclass(frozen=True)
class CrmExtract:
    """crm_notes_raw: one CID's organization and every note of it, in id order."""

    org: Organization
    notes: tuple[CrmNote, ...]


@dataclass(frozen=True)
class NormalizedNotes:
    """normalized_notes: one plan per source note of the CID."""

    org: Organization
    plans: tuple[NotePlan, ...]

    def count(self, outcome: PlanOutcome) -> int:
        """Plans with ``outcome``."""
        return sum(1 for p in self.plans if p.outcome == outcome)

    @property
    def ready(self) -> list[NotePlan]:
        """Plans to write, in source order."""
        return [p for p in self.plans if p.ready]

    @property
    def failures(self) -> list[NotePlan]:
        """Plans that failed a rule."""
        return [p for p in self.plans if p.failed]

    @property
    def failed_by_reason(self) -> Counter:
        """Planning failures per reason code."""
        return Counter(p.reason_code for p in self.failures)

    @property
    def in_scope(self) -> int:
        """Source notes not out of scope (SPEC rule 1)."""
        return len(self.plans) - self.count(PlanOutcome.OUT_OF_SCOPE)

    @property
    def contact_misses(self) -> list[str]:
        """Legacy ids of the notes whose contact is not in CDP (CONTACT_NOT_MAPPED)."""
        return [
            p.legacy_crm_note_id for p in self.plans if p.reason_code == NoteCode.CONTACT_NOT_MAPPED
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
