"""What the CRM source yields, whatever the transport (PostgreSQL or HTTP): plain records.

Notes (organizations, notes, attachments) and, for the activity-log family, audits, users,
the extraction scope and the Stage-0 probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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

    id: int | str  # str only for an API item without a usable id (``unidentified-p1i3``)
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
    # attachments the source listed but that could not be read: (label, exception class)
    invalid_attachments: tuple[tuple[str, str], ...] = ()

    @classmethod
    def unreadable(cls, note_id: int | str, organization_id: int, exc: BaseException) -> CrmNote:
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


@dataclass(frozen=True, slots=True)
class CrmAudit:
    """One row of the CRM ``audits`` table (SPEC-activity-logs §2), as the extractor read it.

    Timestamps are aware/naive ``datetime`` or text (a zone-less value is UTC, §4.5);
    ``audited_changes`` is the raw YAML/JSON text; ``comment`` the raw comment text.
    ``extract_error`` is the exception class when the row could not be read at all.
    """

    id: int
    auditable_type: str | None
    auditable_id: int | None
    associated_type: str | None
    associated_id: int | None
    user_id: int | None
    action: str | None
    audited_changes: str | None
    comment: str | None
    version: int | None
    created_at: datetime | str | None
    extract_error: str | None = None

    @classmethod
    def unreadable(cls, audit_id: int, exc: BaseException) -> CrmAudit:
        """A placeholder for a row that failed to convert; planned as ``transform_error``."""
        return cls(
            id=audit_id,
            auditable_type=None,
            auditable_id=None,
            associated_type=None,
            associated_id=None,
            user_id=None,
            action=None,
            audited_changes=None,
            comment=None,
            version=None,
            created_at=None,
            extract_error=type(exc).__name__,
        )


@dataclass(frozen=True, slots=True)
class CrmUser:
    """A CRM ``users`` row as the actor lookup reads it (SPEC-activity-logs §4.4 hop 1:
    ``SELECT email, full_name, deleted_at FROM users WHERE id = ANY(:ids)``)."""

    id: int
    email: str | None
    full_name: str | None
    deleted_at: datetime | str | None = None


@dataclass(frozen=True)
class AuditScope:
    """What one CID's audit extraction reads (SPEC-activity-logs §3, [N1], [N2], [N13]).

    ``auditable_kinds``: in-scope ``auditable_type`` → kind (``person``, ``deal``, ``task``,
    ``ticket``, ``join:deal``, ``join:task``, ``join:ticket``); its keys are the query's
    ``IN (…)`` list and its kinds name the owner tables of the account predicate.
    ``high_water_id``: ``max(audits.id)`` captured at run start (the inclusive upper bound).
    ``cutoff``: ``date_range_start`` (naive UTC ``datetime`` or PostgreSQL timestamp text), or
    None for ``MIN(created_at)`` of the CID's in-scope audits.
    """

    cid: str
    auditable_kinds: dict[str, str]
    high_water_id: int
    cutoff: datetime | str | None = None

    @property
    def auditable_types(self) -> list[str]:
        """The in-scope ``auditable_type`` values, sorted."""
        return sorted(self.auditable_kinds)


@dataclass(frozen=True)
class AuditProbe:
    """The Stage-0 probe of one CID (SPEC-activity-logs §3, OQ-2), recorded before any load.

    Timestamps are PostgreSQL ``timestamp`` text in UTC (None when the CID has no in-scope
    audit). ``count``: in-scope audits of the CID with ``created_at >= cutoff`` and
    ``id <= high_water_id`` — what extraction must yield; ``first_id``/``last_id`` bound them.
    ``null_created_at``: the CID's in-scope audits without ``created_at`` (the query's
    ``created_at >= :cutoff`` never selects them). ``unattributable``: in-scope audits in the
    window that no CID owns ([N1]; table-wide, None when not counted). ``explain``: the summary
    of ``EXPLAIN ANALYZE`` of the first page query (``summarize_explain``).
    """

    high_water_id: int
    cutoff: str | None
    min_created_at: str | None
    max_created_at: str | None
    count: int
    first_id: int | None
    last_id: int | None
    null_created_at: int = 0
    unattributable: int | None = None
    explain: dict[str, Any] = field(default_factory=dict)
