"""Plain records and the code vocabulary of the activity-log family (SPEC-activity-logs §12).

Everything here is picklable data (no Dagster, no I/O): the CRM audit row, the plan entry that
``normalized_activity_logs`` produces per audit (§15), and the family's plan / skip / failure /
event / run / job codes as ``StrEnum`` values, so they compare equal to the spec's strings.
The final ``Outcome`` and the shared run codes are the core's (``core.vocabulary``),
re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from notes_pipeline.core.vocabulary import MonitorState, Outcome, RunCode

__all__ = [
    "DETERMINISTIC_FAILURES",
    "RETRYABLE_FAILURES",
    "ActivityRunCode",
    "CrmAudit",
    "EventCode",
    "FailureCode",
    "JobStatus",
    "MonitorState",
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
class CrmAudit:
    """One row of the CRM ``audits`` table (§2), as the extractor read it.

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
