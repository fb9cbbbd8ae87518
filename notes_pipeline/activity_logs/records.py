"""Plain records and the code vocabulary of the activity-log family (SPEC-activity-logs §12).

Everything here is picklable data (no Dagster; I/O only to read stored chunks): the CRM
audit row (``CrmAudit``, defined in ``core.crm_records`` because the core's CRM source yields
it; re-exported), the plan entry that ``normalized_activity_logs`` produces per audit (§15), the
two stage outputs (handles on chunked records, ``core.chunks``) and the family's plan / skip /
failure / event / run / job codes as ``StrEnum`` values, so they compare equal to the spec's
strings. The final ``Outcome`` and the shared run codes are the core's (``core.vocabulary``),
re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from notes_pipeline.core.chunks import ChunkedRecords
from notes_pipeline.core.crm_records import AuditProbe, CrmAudit, Organization
from notes_pipeline.core.vocabulary import MonitorState, Outcome, RunCode

if TYPE_CHECKING:
    from notes_pipeline.activity_logs.summary import PlanTally

__all__ = [
    "DETERMINISTIC_FAILURES",
    "RETRYABLE_FAILURES",
    "ActivityRunCode",
    "AuditExtract",
    "CrmAudit",
    "EventCode",
    "FailureCode",
    "JobStatus",
    "MonitorState",
    "NormalizedActivityLogs",
    "Outcome",
    "PlanEntry",
    "PlanOutcome",
    "ReportCode",
    "RunCode",
    "SkipCode",
]


class PlanOutcome(StrEnum):
    """What the plan decides for one audit (§15 ``normalized_activity_logs``)."""

    READY = "ready"
    SKIPPED = "skipped"
    FAILED = "failed"


class SkipCode(StrEnum):
    """Skip reasons (§12): not failures, never in the failure-rate numerator (§6)."""

    DUPLICATE_EXTERNAL_ID = "duplicate_external_id"  # already migrated (§5 writes)
    UNMAPPED_ACTION_TYPE = "unmapped_action_type"  # CategoryMapper row 11 (§4.2)


class FailureCode(StrEnum):
    """Per-record failure codes (§12)."""

    CONTACT_NOT_FOUND = "contact_not_found"  # §4.3
    INVALID_AUDITED_CHANGES = "invalid_audited_changes"  # §4.1, [N24]
    INVALID_TIMESTAMP = "invalid_timestamp"  # §4.5
    ACTOR_LOOKUP_FAILED = "actor_lookup_failed"  # §4.4 [N10]
    WRITE_FAILED = "write_failed"  # §6 end-of-run queue
    TRANSFORM_ERROR = "transform_error"  # poison record, §4 [N24]


#: Failures that skip the end-of-run queue: retrying cannot change them (§6).
DETERMINISTIC_FAILURES = frozenset(
    {
        FailureCode.CONTACT_NOT_FOUND,
        FailureCode.INVALID_AUDITED_CHANGES,
        FailureCode.INVALID_TIMESTAMP,
        FailureCode.TRANSFORM_ERROR,
    }
)
#: Failures the end-of-run queue retries once (§6, [N14]).
RETRYABLE_FAILURES = frozenset({FailureCode.ACTOR_LOOKUP_FAILED, FailureCode.WRITE_FAILED})


class EventCode(StrEnum):
    """Codes that are events, not failures (§12)."""

    ACTOR_NOT_RESOLVED = "actor_not_resolved"  # actor cases A3 and A4 (§4.4)


class ActivityRunCode(StrEnum):
    """This family's run-level codes (§1 HTTP mapping, §12). The shared ones —
    ``FLAG_DISABLED``, ``CRM_EXTRACT_FAILED`` [N23], ``VALIDATION_SKIPPED`` — are the core's
    ``RunCode``."""

    JOB_ALREADY_RUNNING = "JOB_ALREADY_RUNNING"  # 409
    PREREQ_FAILED = "PREREQ_FAILED"  # 422 [N16]
    ROLLBACK_NOT_FOUND = "ROLLBACK_NOT_FOUND"  # rollback 404 [N21]


class ReportCode(StrEnum):
    """Codes that only appear in the Stage-0 probe or the report (§12, [N1])."""

    UNATTRIBUTABLE = "unattributable"


class JobStatus(StrEnum):
    """States of the job document (§6): the core's ``MonitorState`` values plus the rollback
    states of §8 (a ``StrEnum`` cannot extend another; a test keeps them aligned)."""

    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    HALTED = "halted"
    COMPLETED_SUCCESS = "completed_success"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"


@dataclass(frozen=True)
class PlanEntry:
    """The plan for one audit (§15): ready with its document, or skipped/failed with a code.

    ``details`` holds ids, codes, field and tag names only — never YAML values, names or
    emails (§10 [N18]). The remaining fields feed the report's counts (§7 [N20]).
    """

    crm_audit_id: int
    external_id: str
    outcome: PlanOutcome
    code: SkipCode | FailureCode | None = None
    details: str = ""
    document: dict[str, Any] | None = None
    auditable_type: str | None = None
    category: str | None = None
    action: str | None = None
    crm_person_id: int | None = None
    person_source: str | None = None  # comment / yaml / auditable / associated (§4.3 1-3)
    contact_resolved_by: str | None = None  # source_id / crm_contact_id_map (§4.3 4-5)
    contact_match_count: int = 0  # contacts sharing the source_id (>1 = duplicates, [N8])
    crm_user_id: int | None = None
    actor_case: str | None = None  # A1..A4 (§4.4)
    actor_not_resolved: bool = False  # the actor_not_resolved event is due (A3, A4)
    dropped_tags: tuple[tuple[str, int], ...] = ()  # unknown !ruby/* tags and counts (§4.1)

    @property
    def retryable(self) -> bool:
        """True for failures the end-of-run queue retries (§6)."""
        return self.code in RETRYABLE_FAILURES


@dataclass(frozen=True)
class AuditExtract:
    """``crm_audits_raw`` (§15): one CID's in-scope audits in ``audits.id`` order, stored in
    chunks (``audits``: a ``ChunkedRecords[CrmAudit]`` handle; read with ``iter_audits``), the
    Stage-0 probe they were read under (cutoff, high-water id, COUNT) and how many pages the
    keyset extraction took. ``date_range_start`` is the run config as given (None = the
    probe's MIN(created_at) is the cutoff)."""

    org: Organization
    probe: AuditProbe
    audits: ChunkedRecords[CrmAudit]
    pages: int = 0
    date_range_start: str | None = None

    @property
    def extracted(self) -> int:
        """Audits read."""
        return len(self.audits)

    @property
    def complete(self) -> bool:
        """Extraction read exactly the probe's COUNT (§15 'extraction complete')."""
        return self.extracted == self.probe.count

    def iter_audits(self) -> Iterator[CrmAudit]:
        """Every extracted audit once, in ``audits.id`` order; memory is one stored page.
        Raises ``ChunksMissing`` when the chunks were removed (re-materialize the asset)."""
        return iter(self.audits)


@dataclass(frozen=True)
class NormalizedActivityLogs:
    """``normalized_activity_logs`` (§15): one plan entry per extracted audit, in id order,
    stored in chunks of ≤ ``chunk_size`` entries (``entries``: a ``ChunkedRecords[PlanEntry]``
    handle, §11 [N19]), and the plan's figures (``tally``: an
    ``activity_logs.summary.PlanTally`` accumulated while planning, so counts and gates never
    re-read the entries)."""

    org: Organization
    entries: ChunkedRecords[PlanEntry]
    extracted: int
    tally: PlanTally
    identity_emails: int = 0  # distinct normalized emails sent to the identity service
    lookup_batches: int = 0  # batches of lookups (one query of each kind per batch)
    contact_lookups: dict[str, str] = field(default_factory=dict)  # lookup → preloaded/batched

    def iter_entries(self) -> Iterator[PlanEntry]:
        """Every plan entry once, in ``audits.id`` order (the loader and report read this);
        memory is one stored batch. Raises ``ChunksMissing`` when the chunks were removed."""
        return iter(self.entries)

    def iter_entry_chunks(self) -> Iterator[list[PlanEntry]]:
        """The plan entries in ``audits.id`` order, one list per stored chunk (≤ the run's
        ``chunk_size``, §11 [N19])."""
        return self.entries.iter_chunks()

    @property
    def planned(self) -> int:
        """Plan entries (one per extracted audit)."""
        return len(self.entries)

    def count(self, outcome: PlanOutcome) -> int:
        """Entries with ``outcome`` (from the tally)."""
        return self.tally.outcomes[str(outcome)]

    @property
    def failures(self) -> list[PlanEntry]:
        """Entries planned as failed (reads every chunk; holds the failed entries only)."""
        return [e for e in self.iter_entries() if e.outcome == PlanOutcome.FAILED]
