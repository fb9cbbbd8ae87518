"""ContactResolver (SPEC-activity-logs §4.3, [N5]-[N8]) as pure functions over fetched lookups.

Steps 1-3 find the CRM person id of an audit (comment JSON → YAML changes → the audit's own
auditable/associated columns); steps 4-5 map it to a CDP contact through lookups the batch
stage fetched beforehand, already scoped to the CID's ``company_sso_id``:
``contacts`` by ``source_id`` (one ``$in`` per batch) and the ``crm_contact_id_map`` fallback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from notes_pipeline.activity_logs.records import CrmAudit
from notes_pipeline.activity_logs.rules.categories import CategoryRules, Kind, kind_of

PERSON_ID_KEY = "crm_person_id"  # [N5]: in the comment JSON and in audited_changes
MAX_COMMENT_CHARS = 1 << 20  # a comment larger than this is not parsed (step 1 → step 2)
_DIGITS = re.compile(r"[0-9]{1,18}")


class PersonSource(StrEnum):
    """Where the CRM person id came from (§4.3 steps 1-3)."""

    COMMENT = "comment"
    YAML = "yaml"
    AUDITABLE = "auditable"
    ASSOCIATED = "associated"


class ContactLookup(StrEnum):
    """Which lookup found the CDP contact (§4.3 steps 4-5); ``metadata.contact_resolved_by``."""

    SOURCE_ID = "source_id"
    CONTACT_ID_MAP = "crm_contact_id_map"


@dataclass(frozen=True)
class PersonRef:
    """A CRM person id (positive int) and the step that found it."""

    crm_person_id: int
    source: PersonSource


@dataclass(frozen=True)
class SourceIdMatch:
    """The contact chosen for one ``source_id``: the smallest ``_id`` of ``match_count``
    matching contacts ([N8]; > 1 means duplicates, reported)."""

    customer_id: Any  # the contact's ``_id`` as stored in CDP (ObjectId or str)
    match_count: int = 1


@dataclass(frozen=True)
class ContactLookups:
    """What the batch stage fetched for one batch, scoped to one ``company_sso_id``.

    ``by_source_id``: ``str(crm_person_id)`` → ``SourceIdMatch`` (absent = no contact);
    ``id_map``: ``crm_person_id`` → ``customer_id`` from ``crm_contact_id_map`` (absent = no row).
    """

    by_source_id: Mapping[str, SourceIdMatch] = field(default_factory=dict)
    id_map: Mapping[int, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ContactResolution:
    """A resolved contact: ``customer_id``, the person id, and the path that found them."""

    customer_id: Any
    crm_person_id: int
    person_source: PersonSource
    resolved_by: ContactLookup
    match_count: int = 1


def as_person_id(value: Any) -> int | None:
    """A CRM person id from an int (not a bool) or a digit string ([N5]); positive, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value) or None
    return None


def person_id_from_comment(comment: str | None) -> int | None:
    """Step 1: ``audits.comment`` as a JSON object, key ``crm_person_id`` ([N5]).

    Absent, oversized, invalid JSON, a non-object or an unusable value → None (not an error).
    """
    if not isinstance(comment, str) or not comment.strip() or len(comment) > MAX_COMMENT_CHARS:
        return None
    try:
        parsed = json.loads(comment)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict):
        return None
    return as_person_id(parsed.get(PERSON_ID_KEY))


def person_id_from_changes(changes: Sequence[Mapping[str, Any]]) -> int | None:
    """Step 2: the ``crm_person_id`` change: its ``to``, else its ``from`` ([N5])."""
    for change in changes:
        if change.get("field") == PERSON_ID_KEY:
            return as_person_id(change.get("to")) or as_person_id(change.get("from"))
    return None


def person_id_from_columns(audit: CrmAudit, rules: CategoryRules) -> PersonRef | None:
    """Step 3 [N6]: the auditable when it is a person, else the associated row when it is."""
    if kind_of(audit.auditable_type, rules) is Kind.PERSON:
        person_id = as_person_id(audit.auditable_id)
        if person_id is not None:
            return PersonRef(person_id, PersonSource.AUDITABLE)
    if kind_of(audit.associated_type, rules) is Kind.PERSON:
        person_id = as_person_id(audit.associated_id)
        if person_id is not None:
            return PersonRef(person_id, PersonSource.ASSOCIATED)
    return None


def find_person(
    audit: CrmAudit, changes: Sequence[Mapping[str, Any]], rules: CategoryRules
) -> PersonRef | None:
    """Steps 1-3 in order (§4.3): the first that yields a person id wins ([N7]: one person)."""
    from_comment = person_id_from_comment(audit.comment)
    if from_comment is not None:
        return PersonRef(from_comment, PersonSource.COMMENT)
    from_changes = person_id_from_changes(changes)
    if from_changes is not None:
        return PersonRef(from_changes, PersonSource.YAML)
    return person_id_from_columns(audit, rules)


def source_id_of(crm_person_id: int) -> str:
    """The ``contacts.source_id`` value for a CRM person id (§4.3 step 4: ``str(id)``)."""
    return str(crm_person_id)


def pick_contact(customer_ids: Iterable[Any]) -> SourceIdMatch | None:
    """Among the contacts sharing one ``source_id``: the smallest ``_id`` and the count [N8]."""
    distinct = set(customer_ids)
    if not distinct:
        return None
    return SourceIdMatch(min(distinct), len(distinct))


def resolve_contact(person: PersonRef | None, lookups: ContactLookups) -> ContactResolution | None:
    """Steps 4-5 (§4.3): ``source_id`` match, else ``crm_contact_id_map`` (consulted after
    every miss, [N8]); None → failure ``contact_not_found``."""
    if person is None:
        return None
    match = lookups.by_source_id.get(source_id_of(person.crm_person_id))
    if match is not None:
        return ContactResolution(
            match.customer_id,
            person.crm_person_id,
            person.source,
            ContactLookup.SOURCE_ID,
            match.match_count,
        )
    mapped = lookups.id_map.get(person.crm_person_id)
    if mapped is not None:
        return ContactResolution(
            mapped, person.crm_person_id, person.source, ContactLookup.CONTACT_ID_MAP
        )
    return None
