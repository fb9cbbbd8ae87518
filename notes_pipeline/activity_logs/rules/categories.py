"""CategoryMapper (SPEC-activity-logs §4.2, [N4]): (kind × action × changes) → category/action.

Kinds come from the settings map ``auditable_kinds`` (``auditable_type`` → kind). The verbs
are CDP's: the CRM renders every update as "changed". Status verbs (won / completed /
resolved) test the *new* value of the status key against id-sets that are empty by default
(OQ-12), so every status change falls through to ``…/update`` until they are configured.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """What an ``auditable_type`` is (§4.2 [N4])."""

    PERSON = "person"
    DEAL = "deal"
    TASK = "task"
    TICKET = "ticket"
    JOIN_DEAL = "join:deal"
    JOIN_TASK = "join:task"
    JOIN_TICKET = "join:ticket"


class Category(StrEnum):
    """``activity_logs.category`` values (§4.2 [N4])."""

    CONTACT = "contact"
    DEAL = "deal"
    TASK = "task"
    TICKET = "ticket"


class LogAction(StrEnum):
    """``activity_logs.action`` values (§4.2 [N4])."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    WON = "won"
    COMPLETED = "completed"
    RESOLVED = "resolved"
    LINK = "link"
    UNLINK = "unlink"


#: Default ``auditable_kinds`` (§4.2 [N4]); its keys are the in-scope types ([N2]).
DEFAULT_AUDITABLE_KINDS: dict[str, str] = {
    "Crm::Person": Kind.PERSON.value,
    "Crm::Deal": Kind.DEAL.value,
    "Crm::Task": Kind.TASK.value,
    "Crm::Ticket": Kind.TICKET.value,
    "Crm::DealPerson": Kind.JOIN_DEAL.value,
    "Crm::TaskPerson": Kind.JOIN_TASK.value,
    "Crm::TicketPerson": Kind.JOIN_TICKET.value,
}

_CATEGORY_OF = {
    Kind.PERSON: Category.CONTACT,
    Kind.DEAL: Category.DEAL,
    Kind.TASK: Category.TASK,
    Kind.TICKET: Category.TICKET,
    Kind.JOIN_DEAL: Category.DEAL,
    Kind.JOIN_TASK: Category.TASK,
    Kind.JOIN_TICKET: Category.TICKET,
}
_JOINS = frozenset({Kind.JOIN_DEAL, Kind.JOIN_TASK, Kind.JOIN_TICKET})
# §4.2 rows 1-3 (person), 4 (deal/task/ticket create/destroy), 8-9 (joins)
_PERSON_ROWS = {
    "create": (LogAction.CREATE, 1),
    "update": (LogAction.UPDATE, 2),
    "destroy": (LogAction.DELETE, 3),
}
_OWNER_ROWS = {"create": (LogAction.CREATE, 4), "destroy": (LogAction.DELETE, 4)}
_JOIN_ROWS = {"create": (LogAction.LINK, 8), "destroy": (LogAction.UNLINK, 9)}
# rows 5-7: the status key of each kind, its id-set, the verb and the row
_STATUS_RULES = {
    Kind.DEAL: ("crm_stage_id", "won_stage_ids", LogAction.WON, 5),
    Kind.TASK: ("crm_task_status_id", "done_task_status_ids", LogAction.COMPLETED, 6),
    Kind.TICKET: ("crm_ticket_status_id", "resolved_ticket_status_ids", LogAction.RESOLVED, 7),
}
_DIGITS = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class CategoryRules:
    """The configurable inputs of the mapper: ``kinds`` (``auditable_type`` → ``Kind``) and
    the three status id-sets, empty by default (§4.2 [N4], OQ-12)."""

    kinds: Mapping[str, Kind] = field(
        default_factory=lambda: {t: Kind(k) for t, k in DEFAULT_AUDITABLE_KINDS.items()}
    )
    won_stage_ids: frozenset[int] = frozenset()
    done_task_status_ids: frozenset[int] = frozenset()
    resolved_ticket_status_ids: frozenset[int] = frozenset()

    @classmethod
    def build(
        cls,
        kinds: Mapping[str, str],
        won_stage_ids: Iterable[int] = (),
        done_task_status_ids: Iterable[int] = (),
        resolved_ticket_status_ids: Iterable[int] = (),
    ) -> CategoryRules:
        """From plain settings values; raises ``ValueError`` on a kind outside ``Kind``."""
        return cls(
            kinds={auditable_type: Kind(kind) for auditable_type, kind in kinds.items()},
            won_stage_ids=frozenset(won_stage_ids),
            done_task_status_ids=frozenset(done_task_status_ids),
            resolved_ticket_status_ids=frozenset(resolved_ticket_status_ids),
        )


@dataclass(frozen=True)
class CategoryAction:
    """The mapper's verdict: ``category``/``action`` and the §4.2 table ``row`` that matched."""

    category: Category
    action: LogAction
    row: int


def kind_of(auditable_type: str | None, rules: CategoryRules) -> Kind | None:
    """The kind of an ``auditable_type`` per ``auditable_kinds``, or None when out of scope."""
    if auditable_type is None:
        return None
    return rules.kinds.get(auditable_type)


def is_mapped(kind: Kind | None, action: str | None) -> bool:
    """False exactly when §4.2 row 11 applies (unknown kind, or an action outside
    create/update/destroy): the audit is skipped as ``unmapped_action_type``. Every mapped
    kind has a row for each of the three actions (row 10 is the safe update fallthrough)."""
    return kind is not None and action in ("create", "update", "destroy")


def as_status_id(value: Any) -> int | None:
    """A status id from a change value: an int (not a bool) or a digit string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    return None


def new_value(changes: Sequence[Mapping[str, Any]], field_name: str) -> tuple[bool, Any]:
    """``(present, to)`` of ``field_name`` in ``changes`` ([N4]: the new value is tested)."""
    for change in changes:
        if change.get("field") == field_name:
            return True, change.get("to")
    return False, None


def map_category(
    kind: Kind | None,
    action: str | None,
    changes: Sequence[Mapping[str, Any]],
    rules: CategoryRules,
) -> CategoryAction | None:
    """The §4.2 table for one audit; None means row 11 (skip ``unmapped_action_type``).

    ``changes`` are the audit's ``[{"field", "from", "to"}]`` (§4.1). A status key counts
    only on its own kind's update; create audits never become won/completed/resolved.
    """
    if kind is None or not is_mapped(kind, action):
        return None
    category = _CATEGORY_OF[kind]
    if kind is Kind.PERSON:
        verb, row = _PERSON_ROWS[action]  # type: ignore[index]
        return CategoryAction(category, verb, row)
    if kind in _JOINS:
        verb, row = _JOIN_ROWS.get(action, (LogAction.UPDATE, 10))  # type: ignore[arg-type]
        return CategoryAction(category, verb, row)
    if action in _OWNER_ROWS:
        verb, row = _OWNER_ROWS[action]  # type: ignore[index]
        return CategoryAction(category, verb, row)
    key, id_set_name, verb, row = _STATUS_RULES[kind]
    present, to = new_value(changes, key)
    if present and as_status_id(to) in getattr(rules, id_set_name):
        return CategoryAction(category, verb, row)
    return CategoryAction(category, LogAction.UPDATE, 10)
