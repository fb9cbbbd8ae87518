"""SPEC rules 1-7 for one CRM note: the first failing rule decides. Pure and deterministic."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from notes_pipeline.contact_notes.reason_codes import (
    LEGACY_OWNER_FALLBACK_LABEL,
    NoteCode,
    ScopeCode,
)
from notes_pipeline.contact_notes.records import DroppedAttachment, NotePlan, OwnerResolution
from notes_pipeline.contact_notes.rules.attachments import plan_attachments
from notes_pipeline.contact_notes.rules.fingerprint import SOURCE_FINGERPRINT, source_fingerprint
from notes_pipeline.contact_notes.rules.html import (
    NoteContentError,
    content_hash,
    normalize_note_html,
)
from notes_pipeline.core.crm_records import CrmNote, Organization
from notes_pipeline.core.timestamps import InvalidTimestamp, TimestampWindow, to_utc
from notes_pipeline.core.vocabulary import AttachmentCode, Outcome, PlanOutcome

MAX_OWNER_LABEL = 255


@dataclass(frozen=True)
class PlanRules:
    """The configurable inputs of the transform (``timestamp_window`` None = SPEC default)."""

    allowed_note_type_ids: frozenset[int]
    proxy_base_url: str
    timestamp_window: TimestampWindow | None = None


def scope_reason(note: CrmNote, allowed_note_type_ids: Collection[int]) -> str | None:
    """Rule 1: Person notes of an allowed type are in scope; otherwise the out-of-scope reason."""
    if note.crm_person_id is None:
        return ScopeCode.NOT_PERSON_NOTE
    if note.crm_note_type_id not in allowed_note_type_ids:
        return ScopeCode.NOTE_TYPE_EXCLUDED
    return None


def resolve_owner(note: CrmNote, sso_by_email: dict[str, str]) -> OwnerResolution:
    """Rule 3: creator → CRM email → SSO uuid; otherwise a label that still shows the author."""
    email = (note.creator_email or "").strip().lower()
    sso_id = sso_by_email.get(email) if email else None
    if sso_id:
        return OwnerResolution(owner_id=sso_id, legacy_owner_label=None)
    label = (note.creator_name or "").strip() or LEGACY_OWNER_FALLBACK_LABEL
    if len(label) > MAX_OWNER_LABEL:  # a CRM name is never this long: show the fallback
        label = LEGACY_OWNER_FALLBACK_LABEL
    return OwnerResolution(owner_id=None, legacy_owner_label=label)


def plan_note(
    note: CrmNote,
    *,
    org: Organization,
    contact_id: str | None,
    owner: OwnerResolution,
    rules: PlanRules,
) -> NotePlan:
    """Apply rules 1-7 to one note and return its plan (exceptions of a rule propagate).

    A ready plan's document also carries ``legacy_crm_source_fingerprint`` (the CRM fields it
    derives from, hashed; ``rules.fingerprint``), stored at insert so validation can tell a
    CRM-side change from a write-path mismatch (issue #12 item 2).
    """
    legacy_id = str(note.id)
    if note.extract_error is not None:
        return NotePlan(
            legacy_id,
            Outcome.FAILED,
            NoteCode.NOTE_EXTRACT_ERROR,
            f"exception={note.extract_error}",
        )
    out_of_scope = scope_reason(note, rules.allowed_note_type_ids)
    if out_of_scope:
        return NotePlan(legacy_id, Outcome.OUT_OF_SCOPE, out_of_scope, f"fk_shape={note.fk_shape}")
    if contact_id is None:
        return NotePlan(
            legacy_id,
            Outcome.FAILED,
            NoteCode.CONTACT_NOT_MAPPED,
            f"crm_person_id={note.crm_person_id}",
        )
    try:
        html = normalize_note_html(note.note)
    except NoteContentError as exc:
        return NotePlan(legacy_id, Outcome.FAILED, exc.reason_code, exc.details)
    try:
        created_at = to_utc(note.created_at, "created_at", rules.timestamp_window)
        updated_at = to_utc(note.updated_at, "updated_at", rules.timestamp_window)
    except InvalidTimestamp as exc:
        return NotePlan(legacy_id, Outcome.FAILED, NoteCode.INVALID_TIMESTAMP, str(exc))
    planned, dropped = plan_attachments(
        org.company_sso_id, legacy_id, list(note.attachments), rules.proxy_base_url
    )
    dropped += [
        DroppedAttachment(
            label,
            AttachmentCode.ATTACHMENT_COPY_ERROR,
            f"stage=extract exception={kind}",
            "unknown",
        )
        for label, kind in note.invalid_attachments
    ]
    document = {
        "company_sso_id": org.company_sso_id,
        "contact_id": contact_id,
        "owner_id": owner.owner_id,
        "note": html,
        "attachments": [],
        "is_deleted": False,
        "legacy_crm_note_id": legacy_id,
        "created_at": created_at,
        "updated_at": updated_at,
        SOURCE_FINGERPRINT: source_fingerprint(note, created_at, updated_at),
    }
    if owner.legacy_owner_label is not None:
        document["legacy_owner_label"] = owner.legacy_owner_label
    return NotePlan(
        legacy_crm_note_id=legacy_id,
        outcome=PlanOutcome.READY,
        document=document,
        attachments=tuple(planned),
        dropped_attachments=tuple(dropped),
        owner_resolved=owner.resolved,
        crm_user_id=note.creator_id,
        checkin_dropped=note.has_checkin,
        content_hash=content_hash(html),
    )


def plan_note_isolated(
    note: CrmNote,
    *,
    org: Organization,
    contact_id: str | None,
    sso_by_email: dict[str, str],
    rules: PlanRules,
) -> NotePlan:
    """``resolve_owner`` + ``plan_note`` for one note, never raising (issue #8 fault isolation).

    Any unexpected exception makes this note FAILED with ``NOTE_TRANSFORM_ERROR`` and the
    exception class as details (never its message, which may quote content).
    """
    try:
        owner = resolve_owner(note, sso_by_email)
        return plan_note(note, org=org, contact_id=contact_id, owner=owner, rules=rules)
    except Exception as exc:  # noqa: BLE001 - one note fails alone, with a reason code
        return NotePlan(
            str(note.id),
            Outcome.FAILED,
            NoteCode.NOTE_TRANSFORM_ERROR,
            f"exception={type(exc).__name__}",
        )


def in_scope_for_lookup(note: CrmNote, allowed_note_type_ids: Collection[int]) -> bool:
    """True when the note needs a contact lookup; False too when rule 1 itself raises
    (``plan_note_isolated`` then reports the note)."""
    try:
        return note.extract_error is None and scope_reason(note, allowed_note_type_ids) is None
    except Exception:  # noqa: BLE001
        return False
