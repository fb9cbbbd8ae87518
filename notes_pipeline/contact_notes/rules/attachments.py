"""Attachment planning (SPEC rule 6) and magic-byte checks used by the loader.

File-type sniffing uses the ``filetype`` library (pure Python, structured matchers: ZIP member
names for xlsx/docx/pptx, EBML doctype for webm/mkv, RIFF sub-types, ...). The rules below
are home-made only because ``filetype`` 1.2 does not cover them; each says why:

* UTF-16 text (BOM ``FF FE`` / ``FE FF``): no library detects text. A BOM is definitive, so it
  is text-or-nothing: ``FF FE`` also looks like an MPEG layer-I frame sync, and a head whose last
  code unit (or half a surrogate pair) was cut off must still read as text, never as audio.
* OLE2 compound file (``D0 CF 11 E0 A1 B1 1A E1``): ``filetype``'s Doc/Xls/Ppt matchers need
  more than 515 bytes plus a Word/Excel/PowerPoint stream signature at offset 512, so they miss
  short heads and encrypted OOXML (an OLE2 container holding ``EncryptedPackage``).
* ISO-BMFF ``ftyp`` box: ``filetype`` knows HEIC/AVIF only by major brand ``heic``/``avif`` or
  ``mif1``/``msf1`` plus one compatible brand, so it misses ``avis``, ``heix``, ``hevc``, ``miaf``
  ...; its Mp4 matcher needs ``isom``/``mp41``/``mp42`` and its 3GP matcher looks for ``ftyp`` at
  offset 0. We parse major + compatible brands, bounded by the box size and the head.
* MPEG audio frame header: ``filetype``'s Mp3/Aac matchers know only ``FF FB``/``FF F3``/
  ``FF F2`` and ``FF F1``/``FF F9``; CRC-protected MPEG-1 layer III (``FF FA``), MPEG-2.5 and
  CRC-protected ADTS are validated here field by field (layer, bitrate, sample rate).
* Binary signatures on clean text: a few ``filetype`` signatures are 2-3 printable bytes
  (``BM`` bmp, ``%!`` ps, ``ID3`` mp3); a head that starts printable and is entirely plain text
  is text, not binary (binary headers carry NULs/controls; text formats like PDF are exempt).
* Markup (HTML/XML openers) and plain text (CSV, TXT): no library detects them.
"""

from __future__ import annotations

import codecs
import re

import filetype

from notes_pipeline.contact_notes.records import DroppedAttachment, PlannedAttachment
from notes_pipeline.core.crm_records import CrmAttachment
from notes_pipeline.core.vocabulary import AttachmentCode

CDP_ATTACHMENT_TYPES = ("image", "doc", "pdf", "video", "voice_note", "xlsx")

# Bytes of the download given to the sniffer (``filetype`` reads at most this many).
SNIFF_HEAD_BYTES = 8192

_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_CSV_TYPES = frozenset({"text/csv", "application/csv", "text/comma-separated-values"})
_EXCEL_TYPES = frozenset(
    {
        "application/vnd.ms-excel",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    }
)
_SPREADSHEET_TYPES = _CSV_TYPES | _EXCEL_TYPES
_SPREADSHEET_EXTS = frozenset({".xls", ".xlsx", ".csv"})
_VIDEO_EXTS = frozenset({".mp4", ".mov", ".webm", ".avi", ".m4v", ".3gp"})
# Extensions that decide the CDP type when the declared type is generic (see map_attachment_type).
_DECIDING_EXTS = _SPREADSHEET_EXTS | _VIDEO_EXTS | {".pdf"}
# Extensions for a name derived from the declared type when the library has none.
_TEXT_EXTS = {"text/csv": ".csv", "text/plain": ".txt"}
_KIND_ORDER = {"image": 0, "audio": 1, "document": 2}
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_SAFE_NAME = 200


def _media_type(content_type: str | None) -> str:
    """``'Image/PNG; charset=x'`` -> ``'image/png'``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_generic_type(content_type: str | None) -> bool:
    """True for a declared type that says nothing (``None``, empty, ``*/octet-stream``)."""
    return _media_type(content_type) in _GENERIC_TYPES


def _extension(file_name: str | None) -> str:
    """Lower-cased extension with its dot, or ``''`` (also for ``None``)."""
    base = (file_name or "").rsplit("/", 1)[-1]
    return "." + base.rsplit(".", 1)[1].lower() if "." in base.strip(".") else ""


def map_attachment_type(att: CrmAttachment) -> str:
    """Map a CRM attachment to one of ``CDP_ATTACHMENT_TYPES``; never raises.

    A generic declared type counts as none, so the file name's extension decides; what
    neither decides is ``doc`` here and is settled from the bytes at copy time (``cdp_type_for``).
    """
    media, ext = _media_type(att.content_type), _extension(att.file_name)
    if media in _GENERIC_TYPES:
        media = ""
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


def default_file_name(asset_id: str, content_type: str | None) -> str:
    """Name for an attachment without one: ``a123``, or ``a123.png`` when the type tells one."""
    media = _media_type(content_type)
    if media in _GENERIC_TYPES:
        return asset_id
    known = filetype.get_type(mime=media)
    ext = f".{known.extension}" if known is not None else _TEXT_EXTS.get(media, "")
    return asset_id + ext


def safe_file_name(file_name: str | None) -> str:
    """Key-safe name: ``[A-Za-z0-9._-]`` kept, anything else ``_``; never empty, ``None`` ok."""
    safe = _UNSAFE_CHARS.sub("_", (file_name or "").rsplit("/", 1)[-1].strip())
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


def target_key(
    company_sso_id: str, legacy_crm_note_id: str, asset_id: str, file_name: str | None
) -> str:
    """Deterministic CDP key ``{company}/{note}/{asset}-{safe_file_name}``.

    A missing (``None``/blank) name is replaced by the asset id. Raises ``ValueError`` for an
    unsafe company, note or asset id (separators, traversal), never for the name.
    """
    if not _SAFE_ID.fullmatch(asset_id):
        raise ValueError("unsafe asset_id for a storage key")
    company = _key_part(company_sso_id, "company_sso_id")
    note = _key_part(legacy_crm_note_id, "legacy_crm_note_id")
    name = file_name if file_name and file_name.strip() else asset_id
    return f"{company}/{note}/{asset_id}-{safe_file_name(name)}"


def plan_attachments(
    company_sso_id: str,
    legacy_crm_note_id: str,
    attachments: list[CrmAttachment],
    proxy_base_url: str,
) -> tuple[list[PlannedAttachment], list[DroppedAttachment]]:
    """Plan copies in order images, audios, documents; only the first audio becomes a voice note.

    Returns ``(planned, dropped)``. A ``None``/blank file name becomes ``default_file_name``.
    Raises ``ValueError`` only for unsafe key segments (see ``target_key``).
    """
    planned: list[PlannedAttachment] = []
    dropped: list[DroppedAttachment] = []
    voice_note: str | None = None
    base = proxy_base_url.rstrip("/")
    for att in sorted(attachments, key=lambda a: _KIND_ORDER.get(a.kind, 2)):
        cdp_type = map_attachment_type(att)
        if cdp_type == "voice_note":
            if voice_note is not None:
                reason, details = (
                    AttachmentCode.ATTACHMENT_EXTRA_VOICE_NOTE,
                    f"voice_note_asset_id={voice_note}",
                )
                dropped.append(DroppedAttachment(att.asset_id, reason, details))
                continue
            voice_note = att.asset_id
        name = att.file_name
        if not (name and name.strip()):
            name = default_file_name(att.asset_id, att.content_type)
        key = target_key(company_sso_id, legacy_crm_note_id, att.asset_id, name)
        planned.append(
            PlannedAttachment(
                asset_id=att.asset_id,
                source_url=att.file_url,
                cdp_type=cdp_type,
                file_name=display_file_name(name),
                target_key=key,
                proxy_url=f"{base}/{key}",
                content_type=att.content_type,
            )
        )
    return planned, dropped


# --- file-type sniffing (see the module docstring for each home-made rule) -----------------

# filetype's extension -> our kind name, where they differ.
_LIBRARY_KINDS = {"jpg": "jpeg", "tif": "tiff", "apng": "png"}
# Kinds that are text formats themselves, so a clean-text head does not turn them into 'text'.
_TEXT_FORMAT_KINDS = frozenset({"pdf", "rtf"})

_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_UTF16_BOMS = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}
_UTF8_BOM = b"\xef\xbb\xbf"
_MARKUP_OPENERS = (b"<!doctype", b"<html", b"<head", b"<body", b"<script", b"<iframe", b"<svg")
# C0 controls other than tab, LF, CR, FF, ESC, SUB never occur in text files.
_TEXT_CONTROLS = frozenset(range(0x20)) - frozenset(b"\t\n\r\x0c\x1a\x1b")
_CONTROL_BYTE = re.compile(b"[" + re.escape(bytes(sorted(_TEXT_CONTROLS))) + b"]")
_PRINTABLE_START = re.compile(rb"[\x20-\x7e]{2}")  # signatures that could begin a text file

_AVIF_BRANDS = frozenset({"avif", "avis", "avio", "MA1A", "MA1B"})
_HEIC_BRANDS = frozenset({"heic", "heix", "heim", "heis", "hevc", "hevx", "hevm", "hevs"})
_HEIF_BRANDS = frozenset({"mif1", "msf1", "mif2", "miaf"})
_IMAGE_BRANDS = _AVIF_BRANDS | _HEIC_BRANDS | _HEIF_BRANDS
_M4A_BRANDS = frozenset({"M4A ", "M4B ", "M4P ", "F4A ", "F4B "})
# Generic ISO major brands: only under these do compatible image brands make the file an image.
_ISO_BRANDS = frozenset({"isom"} | {f"iso{n}" for n in range(2, 10)})

ACCEPTED_KINDS: dict[str, frozenset[str]] = {
    "image": frozenset({"png", "jpeg", "gif", "webp", "bmp", "tiff", "heic", "heif", "avif"}),
    "voice_note": frozenset(
        {"mp3", "aac", "m4a", "mp4", "ogg", "wav", "webm", "mkv", "amr", "flac"}
    ),
    "video": frozenset({"mp4", "mov", "webm", "mkv", "avi"}),
    "pdf": frozenset({"pdf"}),
    # plus 'ole' for Excel names/types (legacy .xls, encrypted .xlsx), 'text' for CSV
    "xlsx": frozenset({"xlsx", "ods", "zip"}),
    "doc": frozenset(
        {"zip", "docx", "xlsx", "pptx", "odt", "ods", "odp", "epub", "ole", "pdf", "rtf", "text"}
    ),
}

# The content type an object is stored with: what the bytes are, never what the source
# declared (a PNG declared text/html must not be served as HTML). Unlisted kinds are stored
# as application/octet-stream.
STORED_CONTENT_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "heic": "image/heic",
    "heif": "image/heif",
    "avif": "image/avif",
    "mp3": "audio/mpeg",
    "aac": "audio/aac",
    "m4a": "audio/mp4",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "amr": "audio/amr",
    "flac": "audio/flac",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "avi": "video/x-msvideo",
    "pdf": "application/pdf",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odt": "application/vnd.oasis.opendocument.text",
    "odp": "application/vnd.oasis.opendocument.presentation",
    "epub": "application/epub+zip",
    "rtf": "application/rtf",
    "zip": "application/zip",
    "ole": "application/x-ole-storage",
    "text": "text/plain; charset=binary",
}
MAX_DISPLAY_NAME = 255


def stored_content_type(head: bytes) -> str:
    """The content type to store an object with, from its sniffed bytes (``head``)."""
    return STORED_CONTENT_TYPES.get(sniff_type(head) or "", "application/octet-stream")


def display_file_name(name: str) -> str:
    """The file name shown in CDP: at most ``MAX_DISPLAY_NAME`` characters, extension kept."""
    if len(name) <= MAX_DISPLAY_NAME:
        return name
    ext = _extension(name)[:16]
    return name[: MAX_DISPLAY_NAME - len(ext)] + ext


# The CDP type the bytes show, used when the declared type is generic (see cdp_type_for).
_CDP_TYPE_BY_KIND: dict[str, str] = {
    **dict.fromkeys(ACCEPTED_KINDS["image"], "image"),
    **dict.fromkeys(("mp3", "aac", "m4a", "ogg", "wav", "amr", "flac"), "voice_note"),
    **dict.fromkeys(ACCEPTED_KINDS["video"], "video"),
    "pdf": "pdf",
    "xlsx": "xlsx",
    "ods": "xlsx",
    **dict.fromkeys(("zip", "docx", "pptx", "odt", "odp", "epub", "ole", "rtf", "text"), "doc"),
}


def _is_plain_text(head: bytes) -> bool:
    """Bytes without C0 controls other than tab/LF/CR/FF/ESC/SUB (UTF-8, Latin-1, ...)."""
    return bool(head) and _CONTROL_BYTE.search(head) is None


def _utf16_text(head: bytes, encoding: str) -> bool:
    """Text after a UTF-16 BOM; a code unit or surrogate pair cut at the head's end is fine."""
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(head[2:], final=False)
    except UnicodeDecodeError:
        return False
    return not any(ord(ch) in _TEXT_CONTROLS for ch in text)


def _ftyp_brands(head: bytes) -> tuple[str, list[str]] | None:
    """Major and compatible brands of a leading ``ftyp`` box; ``None`` when malformed."""
    size, start = int.from_bytes(head[0:4], "big"), 8
    if size == 1:  # 64-bit largesize after the box type
        size, start = int.from_bytes(head[8:16], "big"), 16
    elif size == 0:  # box runs to the end of the file
        size = len(head)
    end = min(size, len(head))
    if size < start + 8 or end < start + 8:  # no room for major brand + minor version
        return None
    major = head[start : start + 4].decode("latin-1")
    compatible = [head[at : at + 4].decode("latin-1") for at in range(start + 8, end - 3, 4)]
    return major, compatible


def _isobmff_kind(head: bytes) -> str | None:
    """Kind of an ISO-BMFF file from its brands: avif/heic/heif, m4a, mov, else mp4."""
    brands = _ftyp_brands(head)
    if brands is None:
        return None
    major, compatible = brands
    if major in _M4A_BRANDS:
        return "m4a"
    if major == "qt  ":
        return "mov"
    every = {major, *compatible}
    if major in _IMAGE_BRANDS or (major in _ISO_BRANDS and every & _IMAGE_BRANDS):
        if every & _AVIF_BRANDS:
            return "avif"
        return "heic" if every & _HEIC_BRANDS else "heif"
    return "mp4"


def _mpeg_audio_kind(head: bytes) -> str | None:
    """'mp3' for a valid MPEG layer II/III frame header, 'aac' for a valid ADTS header."""
    if len(head) < 4 or head[0] != 0xFF:
        return None
    b1, b2 = head[1], head[2]
    if b1 & 0xF6 == 0xF0:  # ADTS: 12-bit sync, layer 00
        return "aac" if (b2 >> 2) & 0x0F < 13 else None
    version, layer = (b1 >> 3) & 0x03, (b1 >> 1) & 0x03
    valid = (
        b1 & 0xE0 == 0xE0
        and version != 0b01  # reserved
        and layer in (0b01, 0b10)  # layer III, layer II (layer I collides with FF FE / FF FF)
        and (b2 >> 4) not in (0x0, 0xF)  # free / bad bitrate
        and (b2 >> 2) & 0x03 != 0x03  # reserved sample rate
        and head[3] & 0x03 != 0x02  # reserved emphasis
    )
    return "mp3" if valid else None


def _text_kind(head: bytes) -> str | None:
    """'html'/'xml' for markup openers, 'text' for plain text, else ``None``."""
    opener = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if opener.startswith(_MARKUP_OPENERS):
        return "html"
    if opener.startswith(b"<?xml"):
        return "xml"
    return "text" if _is_plain_text(head) else None


def sniff_type(head: bytes) -> str | None:
    """Kind of a file from its first bytes (e.g. ``'png'``, ``'ole'``, ``'text'``); ``None``.

    A definitive marker decides alone and never falls through to a looser rule: a UTF-16 or
    UTF-8 BOM (text or nothing), the OLE2 header, an ISO-BMFF ``ftyp`` box. Never raises.
    """
    if not head:
        return None
    encoding = _UTF16_BOMS.get(head[:2])
    if encoding is not None:
        return "text" if _utf16_text(head, encoding) else None
    if head.startswith(_UTF8_BOM):
        return _text_kind(head)
    if head.startswith(_OLE2):
        return "ole"
    if head[4:8] == b"ftyp":
        return _isobmff_kind(head)
    match = filetype.guess(head[:SNIFF_HEAD_BYTES])
    if match is not None:
        kind = _LIBRARY_KINDS.get(match.extension, match.extension)
        if kind not in _TEXT_FORMAT_KINDS and _PRINTABLE_START.match(head) and _is_plain_text(head):
            return "text"  # a short printable signature ('BM', '%!', 'ID3') on a text file
        return kind
    return _mpeg_audio_kind(head) or _text_kind(head)


def magic_matches(
    cdp_type: str, content_type: str | None, file_name: str | None, head: bytes
) -> bool:
    """True when the sniffed kind of ``head`` is acceptable for ``cdp_type``; never raises.

    ``xlsx`` also accepts an OLE2 container for Excel names/types (legacy ``.xls``, encrypted
    ``.xlsx``) and plain text for CSV names/types. Unknown ``cdp_type`` -> ``False``.
    """
    accepted = ACCEPTED_KINDS.get(cdp_type, frozenset())
    if cdp_type == "xlsx":
        media, ext = _media_type(content_type), _extension(file_name)
        if ext in {".xls", ".xlsx"} or media in _EXCEL_TYPES:
            accepted |= {"ole"}
        if ext == ".csv" or media in _CSV_TYPES:
            accepted |= {"text"}
    return sniff_type(head) in accepted


def cdp_type_for(planned: PlannedAttachment, head: bytes) -> str:
    """CDP attachment type to write for ``planned`` given the downloaded ``head``; never raises.

    The plan's type stands when the CRM declared a specific content type or the file name's
    extension decides it (pdf, xls/xlsx/csv, video). Otherwise (generic or missing declared type)
    the bytes decide, except that copy time never creates a voice note (CDP allows one per
    note, chosen at plan time) and a planned voice note stays one while the bytes are audio.
    Unrecognised bytes keep the plan's type, so the magic check then rejects them.
    """
    if not is_generic_type(planned.content_type):
        return planned.cdp_type
    if _extension(planned.file_name) in _DECIDING_EXTS:
        return planned.cdp_type
    kind = sniff_type(head)
    sniffed = _CDP_TYPE_BY_KIND.get(kind or "")
    if sniffed is None:
        return planned.cdp_type
    if planned.cdp_type == "voice_note" and kind in ACCEPTED_KINDS["voice_note"]:
        return "voice_note"
    if sniffed == "voice_note" and planned.cdp_type != "voice_note":
        return planned.cdp_type
    return sniffed
