"""Counts and figures of the activity-log stages, as pure functions (SPEC-activity-logs §3,
§4.3 [N9], §7 [N20], §15): what the assets put in their metadata and the checks judge.

Everything returned is ids, codes, counts, rates and timestamps — never YAML values, names
or emails (§10 [N18]).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import dagster as dg

from notes_pipeline.activity_logs.records import (
    AuditExtract,
    FailureCode,
    NormalizedActivityLogs,
    PlanEntry,
    PlanOutcome,
    SkipCode,
)
from notes_pipeline.activity_logs.rules.actors import ActorCase
from notes_pipeline.activity_logs.rules.contacts import ContactLookup
from notes_pipeline.activity_logs.rules.plan import ContactCoverage, contact_coverage
from notes_pipeline.core.rates import pct

NOT_FOUND = "not_found"  # contact path: steps 1-5 found no contact
NOT_REACHED = "not_reached"  # contact path: the audit failed before contact resolution


def _sorted(counter: Counter) -> dict[str, int]:
    return {str(k): v for k, v in sorted(counter.items(), key=lambda kv: str(kv[0]))}


def in_scope(entries: Iterable[PlanEntry]) -> list[PlanEntry]:
    """Entries that count for coverage and accuracy: all but ``unmapped_action_type`` skips
    ([N9], [N20])."""
    return [e for e in entries if e.code != SkipCode.UNMAPPED_ACTION_TYPE]


def outcome_counts(entries: Iterable[PlanEntry]) -> dict[str, int]:
    """Entries per plan outcome (every outcome present, 0 when none)."""
    counts = Counter(str(e.outcome) for e in entries)
    return {str(o): counts.get(str(o), 0) for o in PlanOutcome}


def reason_counts(entries: Iterable[PlanEntry]) -> dict[str, int]:
    """Skipped and failed entries per code."""
    return _sorted(Counter(str(e.code) for e in entries if e.code is not None))


def category_action_counts(entries: Iterable[PlanEntry]) -> dict[str, int]:
    """Ready entries per ``category/action`` (§4.2)."""
    return _sorted(
        Counter(f"{e.category}/{e.action}" for e in entries if e.outcome == PlanOutcome.READY)
    )


def actor_case_counts(entries: Iterable[PlanEntry]) -> dict[str, int]:
    """Entries that reached the actor rule, per case A1-A4 (§4.4)."""
    return _sorted(Counter(e.actor_case for e in entries if e.actor_case is not None))


def contact_path(entry: PlanEntry) -> str:
    """How the contact was found (``source_id`` / ``crm_contact_id_map``), or ``not_found``
    (``contact_not_found``), or ``not_reached`` (failed earlier)."""
    if entry.contact_resolved_by is not None:
        return entry.contact_resolved_by
    return NOT_FOUND if entry.code == FailureCode.CONTACT_NOT_FOUND else NOT_REACHED


def contact_path_counts(entries: Iterable[PlanEntry]) -> dict[str, int]:
    """In-scope entries per contact path (§4.3 steps 4-5)."""
    return _sorted(Counter(contact_path(e) for e in in_scope(entries)))


def person_source_counts(entries: Iterable[PlanEntry]) -> dict[str, int]:
    """In-scope entries per step that found the person id (§4.3 steps 1-3), ``none`` when
    no step did."""
    return _sorted(
        Counter(
            e.person_source or "none"
            for e in in_scope(entries)
            if e.code != FailureCode.TRANSFORM_ERROR or e.person_source
        )
    )


def unknown_tag_counts(entries: Iterable[PlanEntry]) -> dict[str, int]:
    """Unknown ``!ruby/*`` tags dropped while parsing, summed over entries (§4.1)."""
    counts: Counter = Counter()
    for entry in entries:
        for tag, n in entry.dropped_tags:
            counts[tag] += n
    return _sorted(counts)


@dataclass(frozen=True)
class PersonCoverage:
    """Person-weighted coverage (§4.3 [N9], reported for OQ-7): distinct CRM persons named by
    in-scope audits, and how many have a contact by ``source_id`` alone, by the map, or none."""

    persons: int
    via_source_id: int
    via_map: int
    not_found: int

    @property
    def source_id_pct(self) -> float:
        """Persons with a contact by ``source_id`` alone, in percent (100.0 when none)."""
        return pct(self.via_source_id, self.persons)


def person_coverage(entries: Iterable[PlanEntry]) -> PersonCoverage:
    """``PersonCoverage`` of a CID's plan (persons whose audits failed before contact
    resolution are not counted: their lookup never ran)."""
    paths: dict[int, str] = {}
    for entry in in_scope(entries):
        path = contact_path(entry)
        if entry.crm_person_id is None or path == NOT_REACHED:
            continue
        if paths.get(entry.crm_person_id) != ContactLookup.SOURCE_ID:
            paths[entry.crm_person_id] = path
    values = Counter(paths.values())
    return PersonCoverage(
        persons=len(paths),
        via_source_id=values[str(ContactLookup.SOURCE_ID)],
        via_map=values[str(ContactLookup.CONTACT_ID_MAP)],
        not_found=values[NOT_FOUND],
    )


@dataclass(frozen=True)
class PlannedFailureRate:
    """§15 'planned failure rate', the halt formula of §6 applied to the plan:
    ``failed / (ready + skipped + failed)`` (skips never in the numerator)."""

    failed: int
    attempted: int

    @property
    def rate(self) -> float:
        """As a fraction (0.0 when nothing was planned), rounded to 6 decimals."""
        return round(self.failed / self.attempted, 6) if self.attempted else 0.0

    def within(self, threshold: float) -> bool:
        """``rate <= threshold`` in exact arithmetic (exactly 0.10 passes [N15])."""
        return Fraction(self.failed) <= Fraction(str(threshold)) * self.attempted


def planned_failure_rate(entries: Iterable[PlanEntry]) -> PlannedFailureRate:
    """The plan's failure rate (every entry counts in the denominator)."""
    items = list(entries)
    failed = sum(1 for e in items if e.outcome == PlanOutcome.FAILED)
    return PlannedFailureRate(failed, len(items))


def actor_unresolved(entries: Iterable[PlanEntry]) -> tuple[int, int]:
    """(A3 + A4 entries, entries that reached the actor rule) (§9 alert: A3+A4 share)."""
    cases = [e.actor_case for e in entries if e.actor_case is not None]
    unresolved = sum(1 for c in cases if c in (ActorCase.A3, ActorCase.A4))
    return unresolved, len(cases)


def coverage(normalized: NormalizedActivityLogs) -> ContactCoverage:
    """Audit-weighted contact coverage of the plan (§4.3 Decision 9 [N9])."""
    return contact_coverage(normalized.entries)


def extract_metadata(extract: AuditExtract, in_scope_types: list[str]) -> dict[str, Any]:
    """``crm_audits_raw`` metadata (§15): the Stage-0 probe figures and the extraction."""
    probe = extract.probe
    values: dict[str, Any] = {
        "cid": extract.org.cid,
        "company_sso_id": extract.org.company_sso_id,
        "high_water_id": probe.high_water_id,
        "cutoff": probe.cutoff,
        "date_range_start": extract.date_range_start,
        "min_created_at": probe.min_created_at,
        "max_created_at": probe.max_created_at,
        "count": probe.count,
        "extracted": extract.extracted,
        "unattributable": probe.unattributable,
        "null_created_at": probe.null_created_at,
        "first_audit_id": probe.first_id,
        "last_audit_id": probe.last_id,
        "pages": extract.pages,
        "in_scope_types": dg.MetadataValue.json(in_scope_types),
        "explain": dg.MetadataValue.json(dict(probe.explain)),
    }
    return {k: v for k, v in values.items() if v is not None}


def plan_metadata(normalized: NormalizedActivityLogs) -> dict[str, Any]:
    """``normalized_activity_logs`` metadata (§15): counts by outcome, category/action, actor
    case, contact path, person source, reason code and unknown YAML tags; coverage figures."""
    entries = normalized.entries
    outcomes = outcome_counts(entries)
    cov = coverage(normalized)
    persons = person_coverage(entries)
    failure = planned_failure_rate(entries)
    unresolved, with_actor = actor_unresolved(entries)
    return {
        "extracted": normalized.extracted,
        "planned": len(entries),
        **{outcome: n for outcome, n in outcomes.items()},
        "outcomes": dg.MetadataValue.json(outcomes),
        "by_reason_code": dg.MetadataValue.json(reason_counts(entries)),
        "by_category_action": dg.MetadataValue.json(category_action_counts(entries)),
        "by_actor_case": dg.MetadataValue.json(actor_case_counts(entries)),
        "by_contact_path": dg.MetadataValue.json(contact_path_counts(entries)),
        "by_person_source": dg.MetadataValue.json(person_source_counts(entries)),
        "unknown_yaml_tags": dg.MetadataValue.json(unknown_tag_counts(entries)),
        "contact_coverage_pct": cov.pct,
        "person_weighted_source_id_pct": persons.source_id_pct,
        "planned_failure_rate": failure.rate,
        "actor_unresolved": unresolved,
        "duplicate_contact_audits": sum(1 for e in entries if e.contact_match_count > 1),
        "identity_emails": normalized.identity_emails,
        "lookup_batches": normalized.lookup_batches,
    }
