"""Plain data records passed between the pipeline's stages (picklable, no Dagster)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from notes_pipeline.transform.attachments import (
    CrmAttachment,
    DroppedAttachment,
    PlannedAttachment,
)


@dataclass(frozen=True)
class Organization:
    """A CRM client account (CID) and its CDP tenant."""

    cid: str
    name: str
    company_sso_id: str


@dataclass(frozen=True)
class CrmNote:
    """One row of `crm_notes` with what the pipeline needs from its relations."""

    id: int
    organization_id: int
    type: str
    crm_person_id: int | None
    crm_company_id: int | None
    crm_deal_id: int | None
    crm_ticket_id: int | None
    crm_note_type_id: int | None
    note: str | None
    creator_id: int | None
    creator_name: str | None
    creator_email: str | None
    created_at: datetime | str | None
    updated_at: datetime | str | None
    attachments: tuple[CrmAttachment, ...] = ()
    has_checkin: bool = False
    extract_error: str | None = None  # exception class when the row could not be read

    @classmethod
    def unreadable(cls, note_id: int, organization_id: int, exc: BaseException) -> CrmNote:
        """A placeholder for a row that failed to convert; planned as NOTE_EXTRACT_ERROR."""
        return cls(
            id=note_id,
            organization_id=organization_id,
            type="",
            crm_person_id=None,
            crm_company_id=None,
            crm_deal_id=None,
            crm_ticket_id=None,
            crm_note_type_id=None,
            note=None,
            creator_id=None,
            creator_name=None,
            creator_email=None,
            created_at=None,
            updated_at=None,
            extract_error=type(exc).__name__,
        )

    @property
    def fk_shape(self) -> str:
        """Which of the four FKs are set, e.g. `person+deal`, or `none`."""
        parts = [
            name
            for name, value in (
                ("person", self.crm_person_id),
                ("company", self.crm_company_id),
                ("deal", self.crm_deal_id),
                ("ticket", self.crm_ticket_id),
            )
            if value is not None
        ]
        return "+".join(parts) or "none"


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
