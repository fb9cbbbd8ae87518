"""Reason codes and outcomes, as named by the PRD (§9, §12) and the RFC review."""

# Outcomes: every source note ends in exactly one of these.
MIGRATED = "migrated"
SKIPPED = "skipped"  # already in CDP (matched on the legacy id)
FAILED = "failed"
OUT_OF_SCOPE = "out_of_scope"
OUTCOMES = (MIGRATED, SKIPPED, FAILED, OUT_OF_SCOPE)

# Planning outcomes of normalized_notes.
READY = "ready"

# Out-of-scope reasons (not failures).
NOT_PERSON_NOTE = "NOT_PERSON_NOTE"
NOTE_TYPE_EXCLUDED = "NOTE_TYPE_EXCLUDED"

# Note failures.
CONTACT_NOT_MAPPED = "CONTACT_NOT_MAPPED"
NOTE_TOO_LONG = "NOTE_TOO_LONG"
NOTE_EMPTY = "NOTE_EMPTY"
INVALID_TIMESTAMP = "INVALID_TIMESTAMP"
BATCH_INSERT_FAILED = "BATCH_INSERT_FAILED"
# Fault isolation (issue #8): an unexpected exception on one note; details = exception class.
NOTE_EXTRACT_ERROR = "NOTE_EXTRACT_ERROR"  # its CRM row could not be read into a note
NOTE_TRANSFORM_ERROR = "NOTE_TRANSFORM_ERROR"  # a rule raised while planning it

# Attachment failures: the attachment is dropped, the note is still inserted.
ATTACHMENT_DOWNLOAD_FAILED = "ATTACHMENT_DOWNLOAD_FAILED"
ATTACHMENT_SSRF_BLOCKED = "ATTACHMENT_SSRF_BLOCKED"
ATTACHMENT_TOO_LARGE = "ATTACHMENT_TOO_LARGE"
ATTACHMENT_TYPE_MISMATCH = "ATTACHMENT_TYPE_MISMATCH"
ATTACHMENT_UPLOAD_FAILED = "ATTACHMENT_UPLOAD_FAILED"
ATTACHMENT_EXTRA_VOICE_NOTE = "ATTACHMENT_EXTRA_VOICE_NOTE"
# An unexpected exception while copying one attachment; details = exception class.
ATTACHMENT_COPY_ERROR = "ATTACHMENT_COPY_ERROR"

# Run-level codes.
FLAG_DISABLED = "FLAG_DISABLED"
CRM_EXTRACT_FAILED = "CRM_EXTRACT_FAILED"
VALIDATION_SKIPPED = "VALIDATION_SKIPPED"

# Monitor states (PRD §8).
NOT_STARTED = "not_started"
IN_PROGRESS = "in_progress"
HALTED = "halted"
COMPLETED_SUCCESS = "completed_success"
COMPLETED_WITH_ERRORS = "completed_with_errors"

LEGACY_OWNER_FALLBACK_LABEL = "[Legacy CRM User]"
