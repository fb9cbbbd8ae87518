"""The contact-notes family's PRD §12 events and their properties (ids and codes only)."""

from __future__ import annotations

import logging

from notes_pipeline.core.events import declare_events, emit, event_line, trigger_label

__all__ = ["emit", "event_line", "note_log", "trigger_label"]

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


declare_events(EVENT_PROPERTIES, warnings=(NOTE_FAILED, ATTACHMENT_FAILED, HALTED))
