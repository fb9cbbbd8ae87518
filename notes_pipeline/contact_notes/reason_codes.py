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


class RepairCode(StrEnum):
    """Why a re-run could not replace an attachment placeholder (issue #12 item 1); the
    attachment was copied, the note keeps its placeholder. Details: ``matched=0`` (the
    placeholder is no longer where it was read) or the exception class."""

    ATTACHMENT_REPAIR_FAILED = "ATTACHMENT_REPAIR_FAILED"


class FidelityCode(StrEnum):
    """Why a migrated note differs from its plan (SPEC "Validation", issue #12 item 2); error
    log details name the differing fields only."""

    # the CRM row changed after the note was migrated (CRM notes are read-only during the
    # coexistence window, PRD §11.1): an anomaly for Ops to review, never overwritten
    SOURCE_DRIFT = "SOURCE_DRIFT"
    # the stored document differs from the plan of an unchanged source: the write path
    FIDELITY_MISMATCH = "FIDELITY_MISMATCH"


#: what a note shows for an owner the identity service cannot resolve (SPEC rule 3)
LEGACY_OWNER_FALLBACK_LABEL = "[Legacy CRM User]"
