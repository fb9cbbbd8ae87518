"""Attachment planning (SPEC rule 6) and magic-byte checks used by the loader."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from notes_pipeline.reason_codes import ATTACHMENT_EXTRA_VOICE_NOTE

CDP_ATTACHMENT_TYPES = ("image", "doc", "pdf", "video", "voice_note", "xlsx")

_CSV_TYPES = frozenset({"text/csv", "application/csv", "text/comma-separated-values"})
_SPREADSHEET_TYPES = _CSV_TYPES | {
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_SPREADSHEET_EXTS = frozenset({".xls", ".xlsx", ".csv"})
_VIDEO_EXTS = frozenset({".mp4", ".mov", ".webm", ".avi", ".m4v", ".3gp"})
_KIND_ORDER = {"image": 0, "audio": 1, "document": 2}
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_SAFE_NAME = 200


@dataclass(frozen=True)
class CrmAttachment:
    """One CRM attachment; ``asset_id`` is ``a{assets.id}`` or ``d{crm_note_attachments.id}``."""

    asset_id: str
    kind: str  # "image" | "audio" | "document"
    file_url: str
    file_name: str
    content_type: str | None
    file_size: int | None


@dataclass(frozen=True)
class PlannedAttachment:
    """An attachment the loader will copy to ``target_key`` and link as ``proxy_url``."""

    asset_id: str
    source_url: str
    cdp_type: str
    file_name: str
    declared_size: int | None
    target_key: str
    proxy_url: str
    content_type: str | None


@dataclass(frozen=True)
class DroppedAttachment:
    """An attachment left out of the note, with its reason code (details: ids only)."""

    asset_id: str
    reason_code: str
    details: str


def _media_type(content_type: str | None) -> str:
    """``'Image/PNG; charset=x'`` -> ``'image/png'``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _extension(file_name: str) -> str:
    """Lower-cased extension with its dot, or ``''``."""
    base = file_name.rsplit("/", 1)[-1]
    return "." + base.rsplit(".", 1)[1].lower() if "." in base.strip(".") else ""


def map_attachment_type(att: CrmAttachment) -> str:
    """Map a CRM attachment to one of ``CDP_ATTACHMENT_TYPES``."""
    media, ext = _media_type(att.content_type), _extension(att.file_name)
    if att.kind == "image" or media.startswith("image/"):
        return "image"
    if att.kind == "audio" or media.startswith("audio/"):
        return "voice_note"
    if media.startswith("video/") or (not media and ext in _VIDEO_EXTS):
        return "video"
    if media == "application/pdf" or ext == ".pdf":
        return "pdf"
    if media in _SPREADSHEET_TYPES or ext in _SPREADSHEET_EXTS:
        return "xlsx"
    return "doc"


def safe_file_name(file_name: str) -> str:
    """Key-safe name: ``[A-Za-z0-9._-]`` kept, anything else ``_``; never empty."""
    safe = _UNSAFE_CHARS.sub("_", file_name.rsplit("/", 1)[-1].strip())
    if not safe.strip("."):
        safe = "file"
    if len(safe) > _MAX_SAFE_NAME:
        ext = _extension(safe)[:16]
        safe = safe[: _MAX_SAFE_NAME - len(ext)] + ext
    return safe


def _key_part(value: str, label: str) -> str:
    """Guard a key segment (company, note, asset id) against separators and traversal."""
    if not value or value in {".", ".."} or not _SAFE_SEGMENT.fullmatch(value):
        raise ValueError(f"unsafe {label} for a storage key")
    return value


def target_key(company_sso_id: str, legacy_crm_note_id: str, asset_id: str, file_name: str) -> str:
    """Deterministic CDP key ``{company}/{note}/{asset}-{safe_file_name}``."""
    if not _SAFE_ID.fullmatch(asset_id):
        raise ValueError("unsafe asset_id for a storage key")
    company = _key_part(company_sso_id, "company_sso_id")
    note = _key_part(legacy_crm_note_id, "legacy_crm_note_id")
    return f"{company}/{note}/{asset_id}-{safe_file_name(file_name)}"


def plan_attachments(
    company_sso_id: str,
    legacy_crm_note_id: str,
    attachments: list[CrmAttachment],
    proxy_base_url: str,
) -> tuple[list[PlannedAttachment], list[DroppedAttachment]]:
    """Plan copies in order images, audios, documents; only the first audio becomes a voice note."""
    planned: list[PlannedAttachment] = []
    dropped: list[DroppedAttachment] = []
    voice_note: str | None = None
    base = proxy_base_url.rstrip("/")
    for att in sorted(attachments, key=lambda a: _KIND_ORDER.get(a.kind, 2)):
        cdp_type = map_attachment_type(att)
        if cdp_type == "voice_note":
            if voice_note is not None:
                reason, details = ATTACHMENT_EXTRA_VOICE_NOTE, f"voice_note_asset_id={voice_note}"
                dropped.append(DroppedAttachment(att.asset_id, reason, details))
                continue
            voice_note = att.asset_id
        key = target_key(company_sso_id, legacy_crm_note_id, att.asset_id, att.file_name)
        planned.append(
            PlannedAttachment(
                asset_id=att.asset_id,
                source_url=att.file_url,
                cdp_type=cdp_type,
                file_name=att.file_name,
                declared_size=att.file_size,
                target_key=key,
                proxy_url=f"{base}/{key}",
                content_type=att.content_type,
            )
        )
    return planned, dropped


# --- magic bytes ---------------------------------------------------------------------------


class Signature(NamedTuple):
    """``kind`` matches when every ``(offset, bytes)`` part is present in the file head."""

    kind: str
    parts: tuple[tuple[int, bytes], ...]
    note: str


# First match wins, so specific entries precede generic ones (e.g. ftyp brands before 'mp4').
SIGNATURES: tuple[Signature, ...] = (
    Signature("png", ((0, b"\x89PNG\r\n\x1a\n"),), "PNG"),
    Signature("jpeg", ((0, b"\xff\xd8\xff"),), "JPEG/JFIF/EXIF"),
    Signature("gif", ((0, b"GIF87a"),), "GIF 87a"),
    Signature("gif", ((0, b"GIF89a"),), "GIF 89a"),
    Signature("webp", ((0, b"RIFF"), (8, b"WEBP")), "WebP (RIFF container)"),
    Signature("wav", ((0, b"RIFF"), (8, b"WAVE")), "WAV (RIFF container)"),
    Signature("avi", ((0, b"RIFF"), (8, b"AVI ")), "AVI (RIFF container)"),
    Signature("bmp", ((0, b"BM"), (6, b"\x00\x00\x00\x00")), "BMP (reserved bytes zero)"),
    Signature("tiff", ((0, b"II*\x00"),), "TIFF little-endian"),
    Signature("tiff", ((0, b"MM\x00*"),), "TIFF big-endian"),
    Signature("m4a", ((4, b"ftyp"), (8, b"M4A ")), "MPEG-4 audio (ftyp M4A)"),
    Signature("m4a", ((4, b"ftyp"), (8, b"M4B ")), "MPEG-4 audio book (ftyp M4B)"),
    Signature("heic", ((4, b"ftyp"), (8, b"heic")), "HEIC image (ftyp heic)"),
    Signature("heic", ((4, b"ftyp"), (8, b"heix")), "HEIC image (ftyp heix)"),
    Signature("heic", ((4, b"ftyp"), (8, b"mif1")), "HEIF image (ftyp mif1)"),
    Signature("avif", ((4, b"ftyp"), (8, b"avif")), "AVIF image (ftyp avif)"),
    Signature("mov", ((4, b"ftyp"), (8, b"qt  ")), "QuickTime (ftyp qt)"),
    Signature("mp4", ((4, b"ftyp"),), "ISO BMFF, any other brand (mp4/isom/mp42/3gp)"),
    Signature("webm", ((0, b"\x1a\x45\xdf\xa3"),), "WebM/Matroska (EBML)"),
    Signature("ogg", ((0, b"OggS"),), "Ogg (Opus/Vorbis)"),
    Signature("flac", ((0, b"fLaC"),), "FLAC"),
    Signature("amr", ((0, b"#!AMR"),), "AMR voice"),
    Signature("mp3", ((0, b"ID3"),), "MP3 with ID3v2 tag"),
    Signature("pdf", ((0, b"%PDF-"),), "PDF"),
    Signature("zip", ((0, b"PK\x03\x04"),), "ZIP: OOXML xlsx/docx/pptx, odt"),
    Signature("zip", ((0, b"PK\x05\x06"),), "ZIP, empty archive"),
    Signature("ole", ((0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"),), "OLE2: legacy xls/doc/ppt"),
)
# Heuristic kinds, checked after the table: 'mp3' (MPEG frame sync 0xFFE, layer != 0),
# 'aac' (ADTS frame sync 0xFFF, layer 0), 'html'/'xml' (markup openers), 'text' (UTF-16 with
# BOM, or bytes without C0 controls other than tab/newline/CR/FF/ESC/SUB).

_MARKUP_OPENERS = (b"<!doctype", b"<html", b"<head", b"<body", b"<script", b"<iframe", b"<svg")
_TEXT_CONTROLS = frozenset(range(0x20)) - frozenset(b"\t\n\r\x0c\x1a\x1b")

ACCEPTED_KINDS: dict[str, frozenset[str]] = {
    "image": frozenset({"png", "jpeg", "gif", "webp", "bmp", "tiff", "heic", "avif"}),
    "voice_note": frozenset({"mp3", "aac", "m4a", "mp4", "ogg", "wav", "webm", "amr", "flac"}),
    "video": frozenset({"mp4", "mov", "webm", "avi"}),
    "pdf": frozenset({"pdf"}),
    "xlsx": frozenset({"zip"}),  # plus 'ole' for .xls, 'text' for .csv (see magic_matches)
    "doc": frozenset({"zip", "ole", "pdf", "text"}),
}


def _is_utf16_text(head: bytes) -> bool:
    """UTF-16 with a BOM that decodes to printable text (Excel 'Unicode text' exports)."""
    encoding = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}.get(head[:2])
    if encoding is None:
        return False
    body = head[2 : 2 + (len(head) - 2) // 2 * 2]
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError:
        return False
    return bool(text) and all(ord(ch) not in _TEXT_CONTROLS for ch in text)


def sniff_type(head: bytes) -> str | None:
    """Detect a file kind from its first bytes (see ``SIGNATURES``); ``None`` if unknown."""
    for sig in SIGNATURES:
        if all(head[offset : offset + len(magic)] == magic for offset, magic in sig.parts):
            return sig.kind
    if _is_utf16_text(head):
        return "text"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    opener = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if opener.startswith(_MARKUP_OPENERS):
        return "html"
    if opener.startswith(b"<?xml"):
        return "xml"
    if head and not any(byte in _TEXT_CONTROLS for byte in head):
        return "text"
    return None


def magic_matches(cdp_type: str, content_type: str | None, file_name: str, head: bytes) -> bool:
    """True when the sniffed kind of ``head`` is acceptable for ``cdp_type``."""
    accepted = ACCEPTED_KINDS.get(cdp_type, frozenset())
    if cdp_type == "xlsx":
        media, ext = _media_type(content_type), _extension(file_name)
        if ext == ".xls" or media == "application/vnd.ms-excel":
            accepted |= {"ole"}
        if ext == ".csv" or media in _CSV_TYPES:
            accepted |= {"text"}
    return sniff_type(head) in accepted
