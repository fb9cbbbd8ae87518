"""ActorResolver (SPEC-activity-logs §4.4, [N10]): the four actor cases over fetched lookups.

Hop 1 (CRM ``users`` by id, batched) and hop 2 (the identity service by email, per company,
3 s timeout, retried once, cached per run) are I/O done by the batch stage; this module only
decides, from their results, which of the cases A1-A4 applies — or that the record fails
``actor_lookup_failed`` because hop 2 still failed after its retry.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from notes_pipeline.core.crm_records import CrmUser

__all__ = [
    "DELETED_USER_LABEL",
    "SYSTEM_LABEL",
    "UNNAMED_USER_LABEL",
    "ActorCase",
    "ActorLookupFailure",
    "ActorResolution",
    "ActorType",
    "CrmUser",
    "IdentityLookups",
    "emails_to_look_up",
    "normalize_email",
    "resolve_actor",
]

SYSTEM_LABEL = "System"  # A1
DELETED_USER_LABEL = "[Deleted CRM User]"  # A4
UNNAMED_USER_LABEL = "[CRM User]"  # ours: A3 when users.full_name is blank


class ActorCase(StrEnum):
    """The four actor cases of §4.4 [N10]."""

    A1 = "A1"  # user_id NULL: system
    A2 = "A2"  # resolved to an SSO id
    A3 = "A3"  # user row, but no email / no SSO id: label only
    A4 = "A4"  # user_id set, no users row: deleted user


class ActorType(StrEnum):
    """``actor.type`` values (§4.4)."""

    SYSTEM = "system"
    USER = "user"
    DELETED_USER = "deleted_user"


@dataclass(frozen=True)
class IdentityLookups:
    """Hop 2's results for one company, keyed by ``normalize_email``.

    ``sso_by_email``: email → SsoID (absent = empty result); ``failed_emails``: emails whose
    lookup still failed (timeout/error) after the retry.
    """

    sso_by_email: Mapping[str, str] = field(default_factory=dict)
    failed_emails: Collection[str] = frozenset()


@dataclass(frozen=True)
class ActorResolution:
    """The actor of one audit: ``actor`` ``{type, sso_id, label}``, the document's ``user_id``
    (SSO uuid or None), whether the ``actor_not_resolved`` event is due (A3/A4), and
    ``crm_user_deleted`` (``users.deleted_at`` set; None when there is no users row)."""

    case: ActorCase
    actor: dict[str, Any]
    user_id: str | None
    not_resolved: bool
    crm_user_deleted: bool | None


@dataclass(frozen=True)
class ActorLookupFailure:
    """Hop 2 failed for the actor's email after its retry → ``actor_lookup_failed`` [N10]."""

    crm_user_id: int


def normalize_email(email: str | None) -> str | None:
    """The lookup/cache key of an email: stripped and lower-cased; None when blank."""
    if not isinstance(email, str):
        return None
    normalized = email.strip().lower()
    return normalized or None


def emails_to_look_up(users: Iterable[CrmUser]) -> list[str]:
    """Distinct normalized emails of hop-1 rows, sorted: one hop-2 key per email (§4.4 cache)."""
    return sorted({e for e in (normalize_email(u.email) for u in users) if e is not None})


def _actor(kind: ActorType, sso_id: str | None, label: str | None) -> dict[str, Any]:
    return {"type": kind.value, "sso_id": sso_id, "label": label}


def resolve_actor(
    user_id: int | None,
    user: CrmUser | None,
    identity: IdentityLookups,
) -> ActorResolution | ActorLookupFailure:
    """Decide the actor case of one audit (§4.4 table and its [N10] defaults).

    ``user_id``: ``audits.user_id``; ``user``: its hop-1 row or None; ``identity``: hop-2
    results. ``deleted_at`` never changes the case; a deactivated user with an SsoID is A2
    (OQ-9 default); an empty hop-2 result is A3; a failed one is ``ActorLookupFailure``.
    """
    if user_id is None:
        return ActorResolution(
            ActorCase.A1, _actor(ActorType.SYSTEM, None, SYSTEM_LABEL), None, False, None
        )
    if user is None:
        return ActorResolution(
            ActorCase.A4,
            _actor(ActorType.DELETED_USER, None, DELETED_USER_LABEL),
            None,
            True,
            None,
        )
    deleted = user.deleted_at is not None
    email = normalize_email(user.email)
    if email is not None and email in identity.failed_emails:
        return ActorLookupFailure(user_id)
    sso_id = identity.sso_by_email.get(email) if email is not None else None
    if sso_id:
        return ActorResolution(
            ActorCase.A2, _actor(ActorType.USER, sso_id, None), sso_id, False, deleted
        )
    label = (user.full_name or "").strip() or UNNAMED_USER_LABEL
    return ActorResolution(ActorCase.A3, _actor(ActorType.USER, None, label), None, True, deleted)
