"""The activity-log family's events (SPEC-activity-logs §9 [N17]): names and allowed
properties, ids and codes only (§10 [N18]). Part 1 emits ``started`` and the per-record
planning events; the load events (``batch_completed``, ``halted``, ``completed``, rollback)
are declared for part 2 (#13)."""

from __future__ import annotations

import logging

from notes_pipeline.core.events import declare_events, emit, event_line, trigger_label

__all__ = ["EVENT_PROPERTIES", "emit", "event_line", "record_log", "trigger_label"]

PREFIX = "crm_activity_logs_migration_"
STARTED = PREFIX + "started"
BATCH_COMPLETED = PREFIX + "batch_completed"
RECORD_FAILED = PREFIX + "record_failed"
RECORD_SKIPPED = PREFIX + "record_skipped"
ACTOR_NOT_RESOLVED = PREFIX + "actor_not_resolved"
HALTED = PREFIX + "halted"
COMPLETED = PREFIX + "completed"
ROLLED_BACK = PREFIX + "rolled_back"
ROLLBACK_FAILED = PREFIX + "rollback_failed"

# Per-record events go to this Python logger (compute logs), not to the Dagster event log.
record_log = logging.getLogger("notes_pipeline.activity_logs.events")

EVENT_PROPERTIES: dict[str, tuple[str, ...]] = {
    STARTED: ("job_id", "cid", "triggered_by"),
    BATCH_COMPLETED: (
        "job_id",
        "cid",
        "batch_number",
        "records_in_batch",
        "failed_in_batch",
        "last_audit_id",
    ),
    RECORD_FAILED: ("job_id", "cid", "external_id", "reason_code"),
    RECORD_SKIPPED: ("job_id", "cid", "external_id", "reason_code"),
    ACTOR_NOT_RESOLVED: ("job_id", "cid", "external_id", "crm_user_id", "actor_case"),
    HALTED: ("job_id", "cid", "failure_rate"),
    COMPLETED: (
        "job_id",
        "cid",
        "status",
        "records_migrated",
        "records_skipped",
        "records_failed",
        "accuracy_pct",
        "duration_seconds",
    ),
    ROLLED_BACK: ("job_id", "cid", "records_removed"),
    ROLLBACK_FAILED: ("job_id", "cid", "records_removed"),
}

declare_events(EVENT_PROPERTIES, warnings=(RECORD_FAILED, HALTED, ROLLBACK_FAILED))


def emit_plan_events(job_id: str, cid: str, entry) -> None:
    """The per-record events of one plan entry (§9): ``record_failed`` / ``record_skipped``
    with its code, and ``actor_not_resolved`` for actor cases A3/A4 — ids and codes only."""
    if entry.outcome == "failed":
        emit(
            record_log,
            RECORD_FAILED,
            job_id=job_id,
            cid=cid,
            external_id=entry.external_id,
            reason_code=str(entry.code),
        )
    elif entry.outcome == "skipped":
        emit(
            record_log,
            RECORD_SKIPPED,
            job_id=job_id,
            cid=cid,
            external_id=entry.external_id,
            reason_code=str(entry.code),
        )
    if entry.actor_not_resolved:
        emit(
            record_log,
            ACTOR_NOT_RESOLVED,
            job_id=job_id,
            cid=cid,
            external_id=entry.external_id,
            crm_user_id=entry.crm_user_id,
            actor_case=entry.actor_case,
        )
