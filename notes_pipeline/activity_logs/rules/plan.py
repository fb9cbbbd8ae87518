"""One audit → one plan entry (SPEC-activity-logs §4, §15 ``normalized_activity_logs``).

The rules run in the order of §4 and the first failing rule decides. Planning has two halves
so that the batch stage can fetch its lookups in one query per batch in between:

* ``prepare_audit`` (no lookups): row readable → mapped kind × action (else skip
  ``unmapped_action_type``; decided first, from the columns alone, so out-of-scope rows never
  count as failures) → ChangesExtractor (§4.1) → CategoryMapper (§4.2) → ContactResolver
  steps 1-3 (§4.3, the person id);
* ``complete_plan`` (lookups fetched): ContactResolver steps 4-5 → ActorResolver (§4.4) →
  timestamps (§4.5) → the §5 document.

The ``*_isolated`` variants never raise: an unexpected exception makes that audit alone fail
``transform_error`` with the exception class as details (§4 poison records, [N24]).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from notes_pipeline.activity_logs.records import (
    CrmAudit,
    FailureCode,
    PlanEntry,
    PlanOutcome,
    SkipCode,
)
from notes_pipeline.activity_logs.rules.actors import (
    ActorLookupFailure,
    CrmUser,
    IdentityLookups,
    resolve_actor,
)
from notes_pipeline.activity_logs.rules.categories import (
    CategoryAction,
    CategoryRules,
    is_mapped,
    kind_of,
    map_category,
)
from notes_pipeline.activity_logs.rules.changes import (
    ACTIONS,
    DEFAULT_LIMITS,
    InvalidAuditedChanges,
    YamlLimits,
    extract_changes,
)
from notes_pipeline.activity_logs.rules.contacts import (
    ContactLookups,
    PersonRef,
    find_person,
    resolve_contact,
)
from notes_pipeline.activity_logs.rules.document import (
    InvalidTimestamp,
    audit_created_at,
    build_document,
    external_id,
)
from notes_pipeline.core.rates import pct


@dataclass(frozen=True)
class PlanContext:
    """Per-run inputs: the CID's tenant, the mapper's settings, the run id (``job_id``), the
    timestamp window (None = the notes default) and the YAML bounds."""

    company_sso_id: str
    rules: CategoryRules = field(default_factory=CategoryRules)
    job_id: str | None = None
    timestamp_window: Any = None  # notes_pipeline.transform.timestamps.TimestampWindow
    yaml_limits: YamlLimits = DEFAULT_LIMITS


@dataclass(frozen=True)
class PlanLookups:
    """One batch's fetched lookups, scoped to ``PlanContext.company_sso_id``: contacts
    (§4.3 steps 4-5), hop-1 users by id and hop-2 identity results (§4.4)."""

    contacts: ContactLookups = field(default_factory=ContactLookups)
    users_by_id: Mapping[int, CrmUser] = field(default_factory=dict)
    identity: IdentityLookups = field(default_factory=IdentityLookups)


@dataclass(frozen=True)
class PreparedAudit:
    """An audit that passed ``prepare_audit``: its changes (PII: memory only), dropped tags,
    category/action and the person id of §4.3 steps 1-3 (None when none was found)."""

    audit: CrmAudit
    changes: list[dict[str, Any]]
    dropped_tags: tuple[tuple[str, int], ...]
    category: CategoryAction
    person: PersonRef | None


def _entry(audit: CrmAudit, outcome: PlanOutcome, **fields: Any) -> PlanEntry:
    return PlanEntry(
        crm_audit_id=audit.id,
        external_id=external_id(audit.id),
        outcome=outcome,
        auditable_type=audit.auditable_type,
        crm_user_id=audit.user_id,
        **fields,
    )


def _transform_error(audit_id: int, stage: str, exc: BaseException) -> PlanEntry:
    return PlanEntry(
        crm_audit_id=audit_id,
        external_id=external_id(audit_id),
        outcome=PlanOutcome.FAILED,
        code=FailureCode.TRANSFORM_ERROR,
        details=f"stage={stage} exception={type(exc).__name__}",
    )


def prepare_audit(audit: CrmAudit, ctx: PlanContext) -> PreparedAudit | PlanEntry:
    """The lookup-free half of the plan; a ``PlanEntry`` when a rule already decided.

    Raises whatever a rule raises unexpectedly (use ``prepare_audit_isolated`` in pipelines).
    """
    if audit.extract_error is not None:
        return _entry(
            audit,
            PlanOutcome.FAILED,
            code=FailureCode.TRANSFORM_ERROR,
            details=f"stage=extract exception={audit.extract_error}",
        )
    kind = kind_of(audit.auditable_type, ctx.rules)
    if not is_mapped(kind, audit.action):
        action = audit.action if audit.action in ACTIONS else "other"
        return _entry(
            audit,
            PlanOutcome.SKIPPED,
            code=SkipCode.UNMAPPED_ACTION_TYPE,
            details=f"kind={kind.value if kind else 'unmapped'} action={action}",
        )
    try:
        extracted = extract_changes(audit.audited_changes, audit.action or "", ctx.yaml_limits)
    except InvalidAuditedChanges as exc:
        return _entry(
            audit,
            PlanOutcome.FAILED,
            code=FailureCode.INVALID_AUDITED_CHANGES,
            details=exc.details,
        )
    category = map_category(kind, audit.action, extracted.changes, ctx.rules)
    if category is None:  # unreachable: is_mapped() held; kept as the row-11 guard
        return _entry(audit, PlanOutcome.SKIPPED, code=SkipCode.UNMAPPED_ACTION_TYPE)
    person = find_person(audit, extracted.changes, ctx.rules)
    return PreparedAudit(audit, extracted.changes, extracted.dropped_tags, category, person)


def complete_plan(prepared: PreparedAudit, ctx: PlanContext, lookups: PlanLookups) -> PlanEntry:
    """The lookup half: contact (steps 4-5), actor, timestamps, then the §5 document."""
    audit = prepared.audit
    common: dict[str, Any] = {
        "category": prepared.category.category.value,
        "action": prepared.category.action.value,
        "dropped_tags": prepared.dropped_tags,
        "crm_person_id": prepared.person.crm_person_id if prepared.person else None,
        "person_source": prepared.person.source.value if prepared.person else None,
    }
    contact = resolve_contact(prepared.person, lookups.contacts)
    if contact is None:
        person_id = prepared.person.crm_person_id if prepared.person else "none"
        return _entry(
            audit,
            PlanOutcome.FAILED,
            code=FailureCode.CONTACT_NOT_FOUND,
            details=f"crm_person_id={person_id}",
            **common,
        )
    common.update(
        contact_resolved_by=contact.resolved_by.value, contact_match_count=contact.match_count
    )
    user = lookups.users_by_id.get(audit.user_id) if audit.user_id is not None else None
    actor = resolve_actor(audit.user_id, user, lookups.identity)
    if isinstance(actor, ActorLookupFailure):
        return _entry(
            audit,
            PlanOutcome.FAILED,
            code=FailureCode.ACTOR_LOOKUP_FAILED,
            details=f"crm_user_id={actor.crm_user_id}",
            **common,
        )
    common.update(actor_case=actor.case.value, actor_not_resolved=actor.not_resolved)
    try:
        created_at = audit_created_at(audit.created_at, ctx.timestamp_window)
    except InvalidTimestamp as exc:
        return _entry(
            audit,
            PlanOutcome.FAILED,
            code=FailureCode.INVALID_TIMESTAMP,
            details=str(exc),
            **common,
        )
    document = build_document(
        audit,
        company_sso_id=ctx.company_sso_id,
        category=prepared.category,
        contact=contact,
        actor=actor,
        changes=prepared.changes,
        created_at=created_at,
        job_id=ctx.job_id,
    )
    return _entry(audit, PlanOutcome.READY, document=document, **common)


def plan_audit(audit: CrmAudit, ctx: PlanContext, lookups: PlanLookups) -> PlanEntry:
    """Both halves for one audit (exceptions of a rule propagate)."""
    prepared = prepare_audit(audit, ctx)
    if isinstance(prepared, PlanEntry):
        return prepared
    return complete_plan(prepared, ctx, lookups)


def prepare_audit_isolated(audit: CrmAudit, ctx: PlanContext) -> PreparedAudit | PlanEntry:
    """``prepare_audit`` that never raises: unexpected exception → ``transform_error``."""
    try:
        return prepare_audit(audit, ctx)
    except Exception as exc:  # noqa: BLE001 - one audit fails alone, with its code
        return _transform_error(_audit_id(audit), "prepare", exc)


def complete_plan_isolated(
    prepared: PreparedAudit, ctx: PlanContext, lookups: PlanLookups
) -> PlanEntry:
    """``complete_plan`` that never raises: unexpected exception → ``transform_error``."""
    try:
        return complete_plan(prepared, ctx, lookups)
    except Exception as exc:  # noqa: BLE001 - one audit fails alone, with its code
        return _transform_error(_audit_id(prepared.audit), "complete", exc)


def plan_audit_isolated(audit: CrmAudit, ctx: PlanContext, lookups: PlanLookups) -> PlanEntry:
    """``plan_audit`` that never raises (§4 poison records → ``transform_error``, [N24]);
    details carry the stage and the exception class only, never its message."""
    prepared = prepare_audit_isolated(audit, ctx)
    if isinstance(prepared, PlanEntry):
        return prepared
    return complete_plan_isolated(prepared, ctx, lookups)


def _audit_id(audit: Any) -> int:
    audit_id = getattr(audit, "id", None)
    return audit_id if isinstance(audit_id, int) else -1


def person_ids_to_look_up(items: Iterable[PreparedAudit | PlanEntry]) -> list[int]:
    """Distinct person ids of a batch's prepared audits, sorted: one ``$in`` per batch [N8]."""
    return sorted(
        {i.person.crm_person_id for i in items if isinstance(i, PreparedAudit) and i.person}
    )


def user_ids_to_look_up(items: Iterable[PreparedAudit | PlanEntry]) -> list[int]:
    """Distinct ``audits.user_id`` of a batch's prepared audits, sorted: hop 1 [N10]."""
    return sorted(
        {
            i.audit.user_id
            for i in items
            if isinstance(i, PreparedAudit) and i.audit.user_id is not None
        }
    )


@dataclass(frozen=True)
class ContactCoverage:
    """The coverage gate's figure (§4.3 [N9]): audits resolved through steps 4-5 over the
    in-scope audits (every plan entry except ``unmapped_action_type`` skips)."""

    resolved: int
    in_scope: int

    @property
    def pct(self) -> float:
        """Percent (3 decimals, for reports), 100.0 for an empty CID."""
        return pct(self.resolved, self.in_scope)

    def meets(self, threshold_pct: float) -> bool:
        """``pct >= threshold_pct`` in exact arithmetic (98.9 % fails 99, 99.0 % passes)."""
        if self.in_scope == 0:
            return True
        return Fraction(100 * self.resolved, self.in_scope) >= Fraction(str(threshold_pct))


def contact_coverage(entries: Iterable[PlanEntry]) -> ContactCoverage:
    """Audit-weighted contact coverage of a CID's plan (§4.3 Decision 9, [N9])."""
    resolved = in_scope = 0
    for entry in entries:
        if entry.code == SkipCode.UNMAPPED_ACTION_TYPE:
            continue
        in_scope += 1
        resolved += entry.contact_resolved_by is not None
    return ContactCoverage(resolved, in_scope)
