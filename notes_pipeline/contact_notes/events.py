"""PRD §12 observability events as structured JSON log lines (ids and codes only, no PII)."""

from __future__ import annotations

import json
import logging
from typing import Any

STARTED = "crm_notes_migration_started"
BATCH_COMPLETED = "crm_notes_migration_batch_completed"
NOTE_FAILED = "crm_notes_migration_note_failed"
ATTACHMENT_FAILED = "crm_notes_migration_attachment_failed"
OWNER_NOT_RESOLVED = "crm_notes_migration_owner_not_resolved"
HALTED = "crm_notes_migration_halted"
COMPLETED = "crm_notes_migration_completed"
CHECKIN_DROPPED = "crm_notes_migration_checkin_dropped"  # SPEC rule 7 (D-10), not in PRD §12

# Per-note events go to this Python logger (compute logs), not to the Dagster event log.
note_log = logging.getLogger("notes_pipeline.contact_notes.events")

EVENT_PROPERTIES: dict[str, tuple[str, ...]] = {
    STARTED: ("job_id", "cid", "triggered_by"),
    BATCH_COMPLETED: ("job_id", "cid", "batch_number", "notes_in_batch", "failed_in_batch"),
    NOTE_FAILED: ("job_id", "cid", "legacy_crm_note_id", "reason_code", "details"),
    ATTACHMENT_FAILED: ("job_id", "cid", "legacy_crm_note_id", "attachment_type", "reason_code"),
    OWNER_NOT_RESOLVED: ("job_id", "cid", "legacy_crm_note_id", "crm_user_id"),
    HALTED: ("job_id", "cid", "failure_rate"),
    CHECKIN_DROPPED: ("job_id", "cid", "legacy_crm_note_id"),
    COMPLETED: (
        "job_id",
        "cid",
        "status",
        "notes_migrated",
        "notes_failed",
        "match_pct",
        "duration_seconds",
    ),
}


def event_line(event: str, **properties: Any) -> str:
    """Render one event; refuses properties the PRD does not list (keeps PII out)."""
    allowed = EVENT_PROPERTIES[event]
    unknown = set(properties) - set(allowed)
    if unknown:
        raise ValueError(f"{event} does not carry {sorted(unknown)}")
    return json.dumps({"event": event, **properties}, sort_keys=True, default=str)


def emit(log: logging.Logger | Any, event: str, **properties: Any) -> None:
    """Log one event at INFO (WARNING for failures and halts)."""
    line = event_line(event, **properties)
    if event in (NOTE_FAILED, ATTACHMENT_FAILED, HALTED):
        log.warning(line)
    else:
        log.info(line)
