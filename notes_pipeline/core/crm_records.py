"""What the CRM source yields, whatever the transport (PostgreSQL or HTTP): plain records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Organization:
    """A CRM client account (CID) and its CDP tenant."""

    cid: str
    name: str
    company_sso_id: str


@dataclass(frozen=True)
class CrmAttachment:
    """One CRM attachment; ``asset_id`` is ``a{assets.id}`` or ``d{crm_note_attachments.id}``."""

    asset_id: str
    kind: str  # "image" | "audio" | "document"
    file_url: str
    file_name: str | None  # NULL in the CRM for some rows
    content_type: str | None
    file_size: int | None


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
