"""The CDP ``activity_logs`` document of one audit (SPEC-activity-logs §5 [N11]) and its UTC
timestamps (§4.5)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from notes_pipeline.activity_logs.records import CrmAudit
from notes_pipeline.activity_logs.rules.actors import ActorResolution
from notes_pipeline.activity_logs.rules.categories import CategoryAction
from notes_pipeline.activity_logs.rules.contacts import ContactResolution
from notes_pipeline.transform.timestamps import InvalidTimestamp, to_utc

if TYPE_CHECKING:  # only to_utc/InvalidTimestamp are a stable import path
    from notes_pipeline.transform.timestamps import TimestampWindow

SOURCE_TAG = "crm_migration"  # §5, Decision 3
EXTERNAL_ID_PREFIX = "crm_audit:"  # §5 [N11]
# A date-time with no zone designator (PostgreSQL `timestamp` text, RFC 3339 without offset)
_ZONELESS = re.compile(r"\s*\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,32})?\s*", re.ASCII)

__all__ = [
    "EXTERNAL_ID_PREFIX",
    "SOURCE_TAG",
    "InvalidTimestamp",
    "audit_created_at",
    "build_document",
    "external_id",
]


def external_id(crm_audit_id: int) -> str:
    """``"crm_audit:<audits.id>"``: the permanent idempotency key (§5, Decision 2)."""
    return f"{EXTERNAL_ID_PREFIX}{crm_audit_id}"


def audit_created_at(value: object, window: TimestampWindow | None = None) -> datetime:
    """``audits.created_at`` as a naive UTC datetime truncated to milliseconds (§4.5).

    Accepts an aware or naive ``datetime`` or text; a value without a zone is UTC. Raises
    ``InvalidTimestamp`` (→ ``invalid_timestamp``) when missing, unparsable or outside
    ``window`` (default: the notes window, 1970-01-01 to now + 1 day).
    """
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif isinstance(value, str) and _ZONELESS.fullmatch(value):
        value = value.strip() + "Z"
    return to_utc(value, "created_at", window)


def build_document(
    audit: CrmAudit,
    *,
    company_sso_id: str,
    category: CategoryAction,
    contact: ContactResolution,
    actor: ActorResolution,
    changes: list[dict[str, Any]],
    created_at: datetime,
    job_id: str | None,
) -> dict[str, Any]:
    """The §5 document: ``updated_at`` = ``created_at`` [N11]; ``metadata`` ids and codes."""
    return {
        "company_sso_id": company_sso_id,
        "customer_id": contact.customer_id,
        "category": category.category.value,
        "action": category.action.value,
        "user_id": actor.user_id,
        "actor": dict(actor.actor),
        "changes": changes,
        "created_at": created_at,
        "updated_at": created_at,
        "external_id": external_id(audit.id),
        "source_tag": SOURCE_TAG,
        "metadata": {
            "crm_audit_id": audit.id,
            "crm_auditable_type": audit.auditable_type,
            "crm_auditable_id": audit.auditable_id,
            "crm_associated_type": audit.associated_type,
            "crm_associated_id": audit.associated_id,
            "crm_action": audit.action,
            "crm_version": audit.version,
            "crm_user_id": audit.user_id,
            "crm_user_deleted": actor.crm_user_deleted,
            "crm_person_id": contact.crm_person_id,
            "contact_resolved_by": contact.resolved_by.value,
            "actor_case": actor.case.value,
            "job_id": job_id,
        },
    }
