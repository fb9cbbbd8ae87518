"""The shared vocabulary (PRD §8, §9, §12): outcomes, load and monitor states, run-level codes.

``StrEnum`` members compare equal to their string values, which are what metadata, events,
error logs and CDP documents carry.
"""

from __future__ import annotations

from enum import StrEnum


class PlanOutcome(StrEnum):
    """A source record's verdict after planning (normalized_* assets)."""

    READY = "ready"
    OUT_OF_SCOPE = "out_of_scope"
    FAILED = "failed"


class Outcome(StrEnum):
    """Where a source record ends after loading: exactly one per record."""

    MIGRATED = "migrated"
    SKIPPED = "skipped"  # already in CDP (matched on its legacy key)
    FAILED = "failed"
    OUT_OF_SCOPE = "out_of_scope"
    NOT_ATTEMPTED = "not_attempted"  # planned, but the load halted before its batch


#: the outcomes a completed (not halted) load ends in
FINAL_OUTCOMES = (Outcome.MIGRATED, Outcome.SKIPPED, Outcome.FAILED, Outcome.OUT_OF_SCOPE)


class LoadStatus(StrEnum):
    """How a loader ended: every batch written, or stopped by the halt rule."""

    LOADED = "loaded"
    HALTED = "halted"


class MonitorState(StrEnum):
    """A CID's monitor state (PRD §8)."""

    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    HALTED = "halted"
    COMPLETED_SUCCESS = "completed_success"
    COMPLETED_WITH_ERRORS = "completed_with_errors"


class RunCode(StrEnum):
    """Run-level codes: a whole CID's run ends with one of these, not a record."""

    FLAG_DISABLED = "FLAG_DISABLED"
    CRM_EXTRACT_FAILED = "CRM_EXTRACT_FAILED"
    VALIDATION_SKIPPED = "VALIDATION_SKIPPED"
    # PRD S01 ERR-2 / §9 row 1: the CID is already completed_success; the load writes nothing
    ALREADY_MIGRATED = "ALREADY_MIGRATED"


class AttachmentCode(StrEnum):
    """Why one attachment was dropped (its record is still written). SPEC "Loading"."""

    ATTACHMENT_DOWNLOAD_FAILED = "ATTACHMENT_DOWNLOAD_FAILED"
    ATTACHMENT_SSRF_BLOCKED = "ATTACHMENT_SSRF_BLOCKED"
    ATTACHMENT_TOO_LARGE = "ATTACHMENT_TOO_LARGE"
    ATTACHMENT_TYPE_MISMATCH = "ATTACHMENT_TYPE_MISMATCH"
    ATTACHMENT_UPLOAD_FAILED = "ATTACHMENT_UPLOAD_FAILED"
    ATTACHMENT_EXTRA_VOICE_NOTE = "ATTACHMENT_EXTRA_VOICE_NOTE"
    # an unexpected exception while copying it (issue #8); details = exception class only
    ATTACHMENT_COPY_ERROR = "ATTACHMENT_COPY_ERROR"
