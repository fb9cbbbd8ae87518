"""Reading the CRM notes API's JSON strictly: one malformed item or attachment fails alone.

The API is a contract with another team (PRD OQ-7); what it sends is checked field by field.
A page that cannot be decoded at all is ``CrmApiShapeError`` (the caller's
``CRM_EXTRACT_FAILED``); an item that cannot be read becomes a ``CrmNote.unreadable``
placeholder (planned as NOTE_EXTRACT_ERROR); an attachment that cannot be read is listed in
``CrmNote.invalid_attachments`` (dropped with ATTACHMENT_COPY_ERROR, its note still written).
Errors name exception classes and field names only, never values.
"""

from __future__ import annotations

import json
from typing import Any

from notes_pipeline.core.crm_records import CrmAttachment, CrmNote

MAX_INT_DIGITS = 18  # ids are bigint; longer integers stay text (and fail where an int is due)
_ATTACHMENT_LISTS = (
    ("images", "image", "a"),
    ("audios", "audio", "a"),
    ("documents", "document", "d"),
)


class CrmApiShapeError(ValueError):
    """A page body that is not the documented shape; ``args[0]`` names what, never values."""


class FieldError(ValueError):
    """One field of one item has the wrong type; ``args[0]`` is the field name."""


def decode_page(content: bytes) -> tuple[list[Any], int | None]:
    """``(items, total_pages)`` of one ``/api/v4/notes`` page body.

    Integers longer than ``MAX_INT_DIGITS`` are kept as text, so one huge number fails only
    its item. Raises ``CrmApiShapeError`` for a body that is not JSON (or nests too deep to
    decode) or whose ``data`` is not a list; an unusable ``meta.total_pages`` is None.
    """
    try:
        body = json.loads(content, parse_int=_int_or_text)
    except (ValueError, RecursionError) as exc:
        raise CrmApiShapeError(f"undecodable body ({type(exc).__name__})") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise CrmApiShapeError("body.data is not a list")
    meta = body.get("meta")
    total = meta.get("total_pages") if isinstance(meta, dict) else None
    return body["data"], total if _is_int(total) and total >= 0 else None


def _int_or_text(digits: str) -> int | str:
    return int(digits) if len(digits.lstrip("-")) <= MAX_INT_DIGITS else digits


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def strict_int(value: Any, field: str, *, optional: bool = True) -> int | None:
    """An integer field: an int, or a decimal string of one; None when absent and optional.
    Raises ``FieldError(field)`` for anything else (floats, booleans, other text)."""
    if value is None and optional:
        return None
    if _is_int(value) and abs(value) < 2**63:
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) <= 19:
        return int(value)
    raise FieldError(field)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def item_id(item: Any) -> int | None:
    """The item's note id, or None when it has no usable one."""
    try:
        return strict_int(item.get("id"), "id", optional=False) if isinstance(item, dict) else None
    except FieldError:
        return None


def _attachment(raw: Any, kind: str, prefix: str) -> CrmAttachment:
    if not isinstance(raw, dict):
        raise FieldError("attachment")
    return CrmAttachment(
        asset_id=f"{prefix}{strict_int(raw.get('id'), 'attachment.id', optional=False)}",
        kind=kind,
        file_url=_text(raw.get("file_url")),
        file_name=_text(raw.get("file_name")),
        content_type=_text(raw.get("content_type")),
        file_size=raw.get("file_size") if _is_int(raw.get("file_size")) else None,
    )


def _attachments(
    item: dict[str, Any],
) -> tuple[tuple[CrmAttachment, ...], tuple[tuple[str, str], ...]]:
    """The item's readable attachments, and ``(label, exception class)`` of the others."""
    good: list[CrmAttachment] = []
    bad: list[tuple[str, str]] = []
    for key, kind, prefix in _ATTACHMENT_LISTS:
        raw_list = item.get(key)
        if raw_list is None:
            continue
        if not isinstance(raw_list, list):
            bad.append((f"{key}", FieldError.__name__))
            continue
        for position, raw in enumerate(raw_list):
            try:
                good.append(_attachment(raw, kind, prefix))
            except Exception as exc:  # noqa: BLE001 - that attachment is dropped alone
                bad.append((f"{key}[{position}]", type(exc).__name__))
    return tuple(good), tuple(bad)


def note_from_api(item: Any, cid: int, position: str) -> CrmNote:
    """One API item as a ``CrmNote`` of CID ``cid``; never raises.

    ``position`` (e.g. ``"p2i7"``, page and index) names an item without a usable id. An item
    that is not an object, has no usable id, belongs to another organization or has a
    mistyped field becomes ``CrmNote.unreadable``.
    """
    note_id = item_id(item)
    if note_id is None:
        return CrmNote.unreadable(f"unidentified-{position}", cid, FieldError("id"))
    try:
        organization_id = strict_int(item.get("organization_id"), "organization_id")
        if organization_id != cid:
            raise FieldError("organization_id")
        creator = item.get("creator") if isinstance(item.get("creator"), dict) else {}
        attachments, invalid = _attachments(item)
        return CrmNote(
            id=note_id,
            organization_id=cid,
            type=_text(item.get("type")) or "",
            crm_person_id=strict_int(item.get("crm_person_id"), "crm_person_id"),
            crm_company_id=strict_int(item.get("crm_company_id"), "crm_company_id"),
            crm_deal_id=strict_int(item.get("crm_deal_id"), "crm_deal_id"),
            crm_ticket_id=strict_int(item.get("crm_ticket_id"), "crm_ticket_id"),
            crm_note_type_id=strict_int(item.get("crm_note_type_id"), "crm_note_type_id"),
            note=item.get("note"),
            creator_id=strict_int(item.get("creator_id"), "creator_id"),
            creator_name=_text(creator.get("full_name")),
            creator_email=_text(creator.get("email")),
            created_at=item.get("created_at"),
            updated_at=item.get("updated_at"),
            attachments=attachments,
            has_checkin=bool(item.get("checkin")),
            invalid_attachments=invalid,
        )
    except Exception as exc:  # noqa: BLE001 - the note is planned as NOTE_EXTRACT_ERROR
        return CrmNote.unreadable(note_id, cid, exc)
