"""The ``attachments`` array of a CDP note: real entries, placeholders, and their repair.

Pure functions (SPEC rule 6 and "Loading"; PRD S05 ERR-1; issue #12 item 1):

* a copied attachment is a **real entry** ``{type, url, file_name, file_size_in_byte}``
  (``url`` = the company-scoped proxy URL of its deterministic target key);
* an attachment that could not be copied is a **placeholder** in its place, so the CDP UI
  shows "Attachment unavailable — could not be migrated" instead of silently omitting it::

      {"type": <planned CDP type>, "url": None, "file_name": <planned name>,
       "file_size_in_byte": None, "unavailable": True, "legacy_crm_asset_id": <asset id>}

* the array holds one element per planned attachment, in plan order (images, audios,
  documents); a re-run replaces each placeholder whose attachment now copies with its real
  entry, at the same position, keyed by ``legacy_crm_asset_id`` (never appended, so never
  duplicated).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from notes_pipeline.contact_notes.records import PlannedAttachment
from notes_pipeline.core.resources.mongo import ATTACHMENT_ASSET_KEY, ATTACHMENT_UNAVAILABLE

__all__ = [
    "ATTACHMENT_ASSET_KEY",
    "ATTACHMENT_UNAVAILABLE",
    "Replacement",
    "held_assets",
    "is_placeholder",
    "note_attachments",
    "placeholder_entry",
    "placeholder_replacements",
    "real_entry",
    "unavailable_assets",
]


def real_entry(att: PlannedAttachment, cdp_type: str, size_in_bytes: int) -> dict[str, Any]:
    """The CDP entry of a copied attachment: ``{type, url, file_name, file_size_in_byte}``;
    ``cdp_type`` is the type settled at copy time (it may refine the planned one)."""
    return {
        "type": cdp_type,
        "url": att.proxy_url,
        "file_name": att.file_name,
        "file_size_in_byte": size_in_bytes,
    }


def placeholder_entry(att: PlannedAttachment) -> dict[str, Any]:
    """The placeholder of an attachment that could not be copied (PRD S05 ERR-1): planned
    type and file name, no URL, no size, ``unavailable: true`` and the CRM asset id as its
    key. Carries no reason code (that is in the error log)."""
    return {
        "type": att.cdp_type,
        "url": None,
        "file_name": att.file_name,
        "file_size_in_byte": None,
        ATTACHMENT_UNAVAILABLE: True,
        ATTACHMENT_ASSET_KEY: att.asset_id,
    }


def is_placeholder(entry: Mapping[str, Any]) -> bool:
    """True for a placeholder (``unavailable`` is exactly ``True``)."""
    return entry.get(ATTACHMENT_UNAVAILABLE) is True


def note_attachments(
    planned: Sequence[PlannedAttachment], copied: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The array to insert: per planned attachment, in plan order, its real entry when
    ``copied`` (asset id → real entry) has it, else its placeholder."""
    return [
        dict(copied[att.asset_id]) if att.asset_id in copied else placeholder_entry(att)
        for att in planned
    ]


@dataclass(frozen=True)
class Replacement:
    """One placeholder to replace: its position in the stored array, its asset id, the entry."""

    position: int
    asset_id: str
    entry: dict[str, Any]


def placeholder_replacements(
    stored: Sequence[Mapping[str, Any]], copied: Mapping[str, Mapping[str, Any]]
) -> list[Replacement]:
    """The placeholders of a stored array whose attachment this run copied (``copied``:
    asset id → real entry), in array order. Real entries and placeholders of attachments
    that failed again are left alone; an empty list means nothing to write."""
    return [
        Replacement(
            position, str(entry[ATTACHMENT_ASSET_KEY]), dict(copied[entry[ATTACHMENT_ASSET_KEY]])
        )
        for position, entry in enumerate(stored)
        if isinstance(entry, Mapping)
        and is_placeholder(entry)
        and entry.get(ATTACHMENT_ASSET_KEY) in copied
    ]


def held_assets(
    stored: Sequence[Any], planned: Sequence[PlannedAttachment]
) -> tuple[str | None, ...]:
    """The planned asset each stored element stands for, in array order: a placeholder by its
    ``legacy_crm_asset_id``, a real entry by its ``url`` (the planned proxy URL); None for an
    element that is neither. Equal to the planned asset ids, in order, exactly when the note
    holds every planned attachment once (as itself or as its placeholder) and nothing else."""
    by_url = {att.proxy_url: att.asset_id for att in planned}
    held: list[str | None] = []
    for entry in stored:
        if not isinstance(entry, Mapping):
            held.append(None)
        elif is_placeholder(entry):
            key = entry.get(ATTACHMENT_ASSET_KEY)
            held.append(str(key) if key is not None else None)
        else:
            held.append(by_url.get(entry.get("url")))
    return tuple(held)


def unavailable_assets(stored: Sequence[Any]) -> list[str]:
    """Asset ids of the placeholders of a stored array, in array order."""
    return [
        str(entry.get(ATTACHMENT_ASSET_KEY))
        for entry in stored
        if isinstance(entry, Mapping) and is_placeholder(entry)
    ]
