"""Counts and figures of the activity-log stages, as pure functions (SPEC-activity-logs §3,
§4.3 [N9], §7 [N20], §15): what the assets put in their metadata and the checks judge.

The plan's figures are accumulated once, while planning, in a ``PlanTally`` stored on
``NormalizedActivityLogs`` (§11: the metadata and gates never re-read the plan's chunks); the
per-figure functions over an iterable of entries are the same tally, for small inputs.

Everything returned is ids, codes, counts, rates and timestamps — never YAML values, names
or emails (§10 [N18]).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
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
from notes_pipeline.activity_logs.rules.plan import ContactCoverage
from notes_pipeline.core.rates import pct

NOT_FOUND = "not_found"  # contact path: steps 1-5 found no contact
NOT_REACHED = "not_reached"  # contact path: the audit failed before contact resolution
WORST = 20  # offending external ids kept for check metadata (the first, in audits.id order)


def _sorted(counter: Counter) -> dict[str, int]:
    return {str(k): v for k, v in sorted(counter.items(), key=lambda kv: str(kv[0]))}


def is_in_scope(entry: PlanEntry) -> bool:
    """Counts for coverage and accuracy: every entry but ``unmapped_action_type`` skips
    ([N9], [N20])."""
    return entry.code != SkipCode.UNMAPPED_ACTION_TYPE


def in_scope(entries: Iterable[PlanEntry]) -> list[PlanEntry]:
    """The entries that count for coverage and accuracy (``is_in_scope``)."""
    return [e for e in entries if is_in_scope(e)]


def contact_path(entry: PlanEntry) -> str:
    """How the contact was found (``source_id`` / ``crm_contact_id_map``), or ``not_found``
    (``contact_not_found``), or ``not_reached`` (failed earlier)."""
    if entry.contact_resolved_by is not None:
        return entry.contact_resolved_by
    return NOT_FOUND if entry.code == FailureCode.CONTACT_NOT_FOUND else NOT_REACHED


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


@dataclass
class PlanTally:
    """Every figure of a plan, accumulated in one pass while planning (``add`` per entry), so
    the metadata and the gates never read the plan's chunks again (§11 [N19]).

    Counters are keyed by code strings; ``contact_not_found_ids`` and ``failed_ids`` keep the
    first ``worst`` external ids in the order added (``audits.id`` order when planning).
    Memory: the counters plus one ``int → path`` entry per distinct CRM person (for the
    person-weighted coverage), never one per audit. Ids and codes only (§10 [N18]).
    """

    worst: int = WORST
    planned: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)  # skipped and failed, per code
    failed_codes: Counter[str] = field(default_factory=Counter)
    category_actions: Counter[str] = field(default_factory=Counter)  # ready entries
    actor_cases: Counter[str] = field(default_factory=Counter)
    contact_paths: Counter[str] = field(default_factory=Counter)  # in-scope entries
    person_sources: Counter[str] = field(default_factory=Counter)  # in-scope entries
    unknown_tags: Counter[str] = field(default_factory=Counter)
    resolved: int = 0  # in-scope entries with a contact (coverage numerator)
    in_scope: int = 0  # coverage denominator [N9]
    unmapped: int = 0
    duplicate_contact_audits: int = 0
    contact_not_found_ids: list[str] = field(default_factory=list)
    failed_ids: list[str] = field(default_factory=list)
    person_paths: dict[int, str] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, entries: Iterable[PlanEntry]) -> PlanTally:
        """The tally of ``entries`` (one pass)."""
        tally = cls()
        for entry in entries:
            tally.add(entry)
        return tally

    def add(self, entry: PlanEntry) -> None:
        """Count one plan entry."""
        self.planned += 1
        self.outcomes[str(entry.outcome)] += 1
        if entry.code is not None:
            self.codes[str(entry.code)] += 1
        if entry.outcome == PlanOutcome.FAILED:
            self.failed_codes[str(entry.code)] += 1
            if len(self.failed_ids) < self.worst:
                self.failed_ids.append(entry.external_id)
        elif entry.outcome == PlanOutcome.READY:
            self.category_actions[f"{entry.category}/{entry.action}"] += 1
        if entry.actor_case is not None:
            self.actor_cases[entry.actor_case] += 1
        for tag, n in entry.dropped_tags:
            self.unknown_tags[tag] += n
        if entry.contact_match_count > 1:
            self.duplicate_contact_audits += 1
        if entry.code == FailureCode.CONTACT_NOT_FOUND and (
            len(self.contact_not_found_ids) < self.worst
        ):
            self.contact_not_found_ids.append(entry.external_id)
        if not is_in_scope(entry):
            self.unmapped += 1
            return
        self.in_scope += 1
        self.resolved += entry.contact_resolved_by is not None
        path = contact_path(entry)
        self.contact_paths[path] += 1
        if entry.code != FailureCode.TRANSFORM_ERROR or entry.person_source:
            self.person_sources[entry.person_source or "none"] += 1
        person = entry.crm_person_id
        if person is not None and path != NOT_REACHED:
            if self.person_paths.get(person) != ContactLookup.SOURCE_ID:
                self.person_paths[person] = path

    @property
    def failed(self) -> int:
        """Entries planned as failed."""
        return self.outcomes[str(PlanOutcome.FAILED)]

    @property
    def contact_not_found(self) -> int:
        """Entries that failed ``contact_not_found``."""
        return self.codes[str(FailureCode.CONTACT_NOT_FOUND)]

    def outcome_counts(self) -> dict[str, int]:
        """Entries per plan outcome (every outcome present, 0 when none)."""
        return {str(o): self.outcomes.get(str(o), 0) for o in PlanOutcome}

    @property
    def coverage(self) -> ContactCoverage:
        """Audit-weighted contact coverage (§4.3 Decision 9 [N9])."""
        return ContactCoverage(self.resolved, self.in_scope)

    @property
    def person_coverage(self) -> PersonCoverage:
        """``PersonCoverage`` (persons whose audits failed before contact resolution are not
        counted: their lookup never ran)."""
        values = Counter(self.person_paths.values())
        return PersonCoverage(
            persons=len(self.person_paths),
            via_source_id=values[str(ContactLookup.SOURCE_ID)],
            via_map=values[str(ContactLookup.CONTACT_ID_MAP)],
            not_found=values[NOT_FOUND],
        )

    @property
    def failure_rate(self) -> PlannedFailureRate:
        """The plan's failure rate (every entry counts in the denominator)."""
        return PlannedFailureRate(self.failed, self.planned)

    @property
    def actor_unresolved(self) -> tuple[int, int]:
        """(A3 + A4 entries, entries that reached the actor rule) (§9 alert: A3+A4 share)."""
        unresolved = self.actor_cases[ActorCase.A3] + self.actor_cases[ActorCase.A4]
        return unresolved, sum(self.actor_cases.values())


def outcome_counts(entries: Iterable[PlanEntry]) -> dict[str, int]:
    """Entries per plan outcome (every outcome present, 0 when none)."""
    return PlanTally.of(entries).outcome_counts()


def person_coverage(entries: Iterable[PlanEntry]) -> PersonCoverage:
    """``PersonCoverage`` of a CID's plan (``PlanTally.person_coverage``)."""
    return PlanTally.of(entries).person_coverage


def planned_failure_rate(entries: Iterable[PlanEntry]) -> PlannedFailureRate:
    """The plan's failure rate (every entry counts in the denominator)."""
    return PlanTally.of(entries).failure_rate


def actor_unresolved(entries: Iterable[PlanEntry]) -> tuple[int, int]:
    """(A3 + A4 entries, entries that reached the actor rule) (§9 alert: A3+A4 share)."""
    return PlanTally.of(entries).actor_unresolved


def coverage(normalized: NormalizedActivityLogs) -> ContactCoverage:
    """Audit-weighted contact coverage of the plan (§4.3 Decision 9 [N9]), from its tally."""
    return normalized.tally.coverage


def extract_metadata(extract: AuditExtract, in_scope_types: list[str]) -> dict[str, Any]:
    """``crm_audits_raw`` metadata (§15): the Stage-0 probe figures and the extraction (pages
    read, chunk files written)."""
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
        "chunks": extract.audits.chunk_count,
        "in_scope_types": dg.MetadataValue.json(in_scope_types),
        "explain": dg.MetadataValue.json(dict(probe.explain)),
    }
    return {k: v for k, v in values.items() if v is not None}


def plan_metadata(normalized: NormalizedActivityLogs) -> dict[str, Any]:
    """``normalized_activity_logs`` metadata (§15): counts by outcome, category/action, actor
    case, contact path, person source, reason code and unknown YAML tags; coverage figures;
    the chunks the plan is stored in. Read from the plan's tally: no entry is re-read."""
    tally = normalized.tally
    outcomes = tally.outcome_counts()
    unresolved, _with_actor = tally.actor_unresolved
    return {
        "extracted": normalized.extracted,
        "planned": tally.planned,
        **{outcome: n for outcome, n in outcomes.items()},
        "outcomes": dg.MetadataValue.json(outcomes),
        "by_reason_code": dg.MetadataValue.json(_sorted(tally.codes)),
        "by_category_action": dg.MetadataValue.json(_sorted(tally.category_actions)),
        "by_actor_case": dg.MetadataValue.json(_sorted(tally.actor_cases)),
        "by_contact_path": dg.MetadataValue.json(_sorted(tally.contact_paths)),
        "by_person_source": dg.MetadataValue.json(_sorted(tally.person_sources)),
        "unknown_yaml_tags": dg.MetadataValue.json(_sorted(tally.unknown_tags)),
        "contact_coverage_pct": tally.coverage.pct,
        "person_weighted_source_id_pct": tally.person_coverage.source_id_pct,
        "planned_failure_rate": tally.failure_rate.rate,
        "actor_unresolved": unresolved,
        "duplicate_contact_audits": tally.duplicate_contact_audits,
        "identity_emails": normalized.identity_emails,
        "lookup_batches": normalized.lookup_batches,
        "contact_lookups": dg.MetadataValue.json(normalized.contact_lookups),
        "chunks": normalized.entries.chunk_count,
    }
