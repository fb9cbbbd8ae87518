"""The contact-notes family's stage records and their derived properties (picklable, no Dagster)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from notes_pipeline.contact_notes import reason_codes as rc
from notes_pipeline.core.crm_records import CrmNote, Organization


@dataclass(frozen=True)
class PlannedAttachment:
    """An attachment the loader will copy to ``target_key`` and link as ``proxy_url``."""

    asset_id: str
    source_url: str
    cdp_type: str
    file_name: str  # never None: derived from the asset id when the CRM has none
    declared_size: int | None
    target_key: str
    proxy_url: str
    content_type: str | None


@dataclass(frozen=True)
class DroppedAttachment:
    """An attachment left out of the note, with its reason code (details: ids only)."""

    asset_id: str
    reason_code: str
    details: str


@dataclass(frozen=True)
class OwnerResolution:
    """The CDP owner of a note: an SSO uuid, or a label to show instead."""

    owner_id: str | None
    legacy_owner_label: str | None

    @property
    def resolved(self) -> bool:
        return self.owner_id is not None


@dataclass(frozen=True)
class NotePlan:
    """normalized_notes' verdict on one source note, and the CDP document when ready."""

    legacy_crm_note_id: str
    outcome: str  # READY / OUT_OF_SCOPE / FAILED
    reason_code: str | None = None
    details: str = ""
    document: dict[str, Any] | None = None
    attachments: tuple[PlannedAttachment, ...] = ()
    dropped_attachments: tuple[DroppedAttachment, ...] = ()
    owner_resolved: bool = True
    crm_user_id: int | None = None
    checkin_dropped: bool = False
    content_hash: str | None = None


@dataclass
class NoteOutcome:
    """Final outcome of one source note after loading."""

    legacy_crm_note_id: str
    outcome: str  # MIGRATED / SKIPPED / FAILED / OUT_OF_SCOPE / not_attempted
    reason_code: str | None = None
    details: str = ""


@dataclass
class AttachmentFailure:
    legacy_crm_note_id: str
    asset_id: str
    attachment_type: str
    reason_code: str
    details: str = ""


@dataclass
class LoadResult:
    """What cdp_notes_loaded did for one CID."""

    cid: str
    company_sso_id: str
    status: str  # "loaded" or HALTED
    outcomes: list[NoteOutcome] = field(default_factory=list)
    attachment_failures: list[AttachmentFailure] = field(default_factory=list)
    attachments_planned: int = 0
    attachments_copied: int = 0
    copied_keys: list[str] = field(default_factory=list)
    batches: int = 0
    load_failure_rate: float = 0.0
    duration_seconds: float = 0.0


@dataclass(frozen=True)
class CrmExtract:
    org: Organization
    notes: tuple[CrmNote, ...]


@dataclass(frozen=True)
class NormalizedNotes:
    org: Organization
    plans: tuple[NotePlan, ...]

    def count(self, outcome: str) -> int:
        return sum(1 for p in self.plans if p.outcome == outcome)

    @property
    def in_scope(self) -> int:
        return len(self.plans) - self.count(rc.OUT_OF_SCOPE)

    @property
    def contact_misses(self) -> list[str]:
        return [p.legacy_crm_note_id for p in self.plans if p.reason_code == rc.CONTACT_NOT_MAPPED]

    @property
    def failures(self) -> list[NotePlan]:
        return [p for p in self.plans if p.outcome == rc.FAILED]


@dataclass
class ValidationReport:
    cid: str
    company_sso_id: str
    status: str
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
    validation_skipped: bool = False
    error_log_key: str | None = None
    error_rows: int = 0
    duration_seconds: float = 0.0
