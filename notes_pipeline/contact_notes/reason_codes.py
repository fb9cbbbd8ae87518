"""The contact-notes family's reason codes, as named by the PRD (§9, §12) and SPEC.md.

Outcomes, monitor states, run-level and attachment codes are shared: ``core.vocabulary``.
"""

from __future__ import annotations

from enum import StrEnum


class ScopeCode(StrEnum):
    """Why a note is out of scope (SPEC rule 1); not a failure."""

    NOT_PERSON_NOTE = "NOT_PERSON_NOTE"
    NOTE_TYPE_EXCLUDED = "NOTE_TYPE_EXCLUDED"


class NoteCode(StrEnum):
    """Why a note failed (SPEC rules 2, 4, 5 and "Loading")."""

    CONTACT_NOT_MAPPED = "CONTACT_NOT_MAPPED"
    NOTE_TOO_LONG = "NOTE_TOO_LONG"
    NOTE_EMPTY = "NOTE_EMPTY"
    INVALID_TIMESTAMP = "INVALID_TIMESTAMP"
    BATCH_INSERT_FAILED = "BATCH_INSERT_FAILED"
    # Fault isolation (issue #8): an unexpected exception on one note; details = its class.
    NOTE_EXTRACT_ERROR = "NOTE_EXTRACT_ERROR"  # its CRM row could not be read into a note
    NOTE_TRANSFORM_ERROR = "NOTE_TRANSFORM_ERROR"  # a rule raised while planning it


#: what a note shows for an owner the identity service cannot resolve (SPEC rule 3)
LEGACY_OWNER_FALLBACK_LABEL = "[Legacy CRM User]"
