"""Tiny but real attachment files (PNG, JPEG, MP3, M4A, PDF, XLSX, DOCX, CSV), built in memory.

Every builder is deterministic: same ``variant`` and ``label`` give the same bytes.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib

# ext -> (CRM storage kind, content type). Images and audios live in ``assets``,
# documents in ``crm_note_attachments``.
FILE_TYPES: dict[str, tuple[str, str]] = {
    "png": ("image", "image/png"),
    "jpeg": ("image", "image/jpeg"),
    "mp3": ("audio", "audio/mpeg"),
    "m4a": ("audio", "audio/mp4"),
    "pdf": ("document", "application/pdf"),
    "xlsx": (
        "document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    "docx": (
        "document",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    "csv": ("document", "text/csv"),
}

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _ascii(label: str) -> str:
    """Printable ASCII version of a label (safe inside PDF strings and headers)."""
    text = label.encode("ascii", "replace").decode("ascii")
    return "".join(c if c.isalnum() or c in " -_.:#" else "_" for c in text)


# --- images -----------------------------------------------------------------


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def make_png(variant: int, label: str = "") -> bytes:
    """A valid RGB PNG (8..20 px square) of deterministic noise, with a tEXt label."""
    rng = random.Random(variant)
    size = rng.randint(8, 20)
    rows = b"".join(b"\x00" + rng.randbytes(size * 3) for _ in range(size))
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    text = b"Comment\x00" + _ascii(label).encode("ascii")
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"tEXt", text)
        + _png_chunk(b"IDAT", zlib.compress(rows, 9))
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    """A JPEG marker segment (length includes its own two bytes)."""
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def make_jpeg(variant: int, label: str = "") -> bytes:
    """A valid baseline grayscale JPEG of 8*n x 8 flat-gray blocks with a comment segment.

    Huffman tables hold a single 1-bit code each (DC category 0, AC end-of-block),
    so every block encodes as the two bits ``00``.
    """
    blocks = random.Random(variant).randint(1, 4)
    jfif = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\x00" + bytes([1] * 64)
    sof = struct.pack(">BHHB", 8, 8, 8 * blocks, 1) + b"\x01\x11\x00"
    dht_dc = b"\x00" + bytes([1] + [0] * 15) + b"\x00"
    dht_ac = b"\x10" + bytes([1] + [0] * 15) + b"\x00"
    sos = b"\x01\x01\x00\x00\x3f\x00"
    bits = "00" * blocks
    bits += "1" * (-len(bits) % 8)
    scan = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))
    comment = f"synthetic CRM image {_ascii(label)} #{variant}".encode("ascii")
    return (
        b"\xff\xd8"
        + _jpeg_segment(0xE0, jfif)
        + _jpeg_segment(0xFE, comment)
        + _jpeg_segment(0xDB, dqt)
        + _jpeg_segment(0xC0, sof)
        + _jpeg_segment(0xC4, dht_dc)
        + _jpeg_segment(0xC4, dht_ac)
        + _jpeg_segment(0xDA, sos)
        + scan
        + b"\xff\xd9"
    )


# --- audio ------------------------------------------------------------------


def _syncsafe(n: int) -> bytes:
    """ID3v2 syncsafe 28-bit integer."""
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def make_mp3(variant: int, label: str = "") -> bytes:
    """ID3v2.3 tag (TIT2) followed by silent MPEG-1 Layer III frames (128 kbps, 44.1 kHz, mono)."""
    title = b"\x00" + f"Rekaman {_ascii(label)}".encode("ascii")
    frame = b"TIT2" + struct.pack(">I", len(title)) + b"\x00\x00" + title
    tag = b"ID3\x03\x00\x00" + _syncsafe(len(frame)) + frame
    frames = random.Random(variant).randint(2, 5)
    mpeg = (b"\xff\xfb\x90\xc4" + b"\x00" * 413) * frames
    return tag + mpeg


def _box(kind: bytes, payload: bytes) -> bytes:
    """An ISO BMFF box."""
    return struct.pack(">I", len(payload) + 8) + kind + payload


def make_m4a(variant: int, label: str = "") -> bytes:
    """An ISO BMFF file with an ``ftyp M4A `` box, a labelled ``free`` box and an ``mdat`` box."""
    ftyp = _box(b"ftyp", b"M4A " + struct.pack(">I", 0x200) + b"M4A isomiso2")
    free = _box(b"free", f"pesan suara {_ascii(label)} #{variant}".encode("ascii"))
    mdat = _box(b"mdat", random.Random(variant).randbytes(256))
    return ftyp + free + mdat


# --- documents --------------------------------------------------------------


def make_pdf(variant: int, label: str = "") -> bytes:
    """A valid one-page PDF 1.4 with a correct xref table."""
    text = f"Penawaran {_ascii(label)} #{variant}"
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def _zip(parts: list[tuple[str, str]]) -> bytes:
    """A deterministic zip archive (fixed timestamps and attributes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in parts:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, text.encode("utf-8"))
    return buffer.getvalue()


_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_CT_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_OFFICE_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
SHEET_MAIN_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
SHEET_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
WORD_MAIN_CT = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"


def _content_types(overrides: dict[str, str]) -> str:
    """The ``[Content_Types].xml`` part."""
    items = "".join(
        f'<Override PartName="{part}" ContentType="{ct}"/>' for part, ct in overrides.items()
    )
    return (
        f'{_XML}<Types xmlns="{_CT_NS}">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f"{items}</Types>"
    )


def _rels(rel_type: str, target: str) -> str:
    """A relationships part with a single relationship."""
    return (
        f'{_XML}<Relationships xmlns="{_REL_NS}">'
        f'<Relationship Id="rId1" Type="{_OFFICE_REL}/{rel_type}" Target="{target}"/>'
        "</Relationships>"
    )


def _xml_text(text: str) -> str:
    """Escape text for XML element content."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def make_xlsx(variant: int, label: str = "") -> bytes:
    """A minimal SpreadsheetML workbook with one sheet of inline strings and numbers."""
    rng = random.Random(variant)
    rows = [
        '<row r="1"><c r="A1" t="inlineStr"><is><t>Produk</t></is></c>'
        '<c r="B1" t="inlineStr"><is><t>Harga</t></is></c></row>'
    ]
    for r in range(2, rng.randint(3, 6)):
        name = _xml_text(f"{label} item {r - 1}")
        rows.append(
            f'<row r="{r}"><c r="A{r}" t="inlineStr"><is><t>{name}</t></is></c>'
            f'<c r="B{r}"><v>{rng.randint(1, 500) * 1000}</v></c></row>'
        )
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    sheet = f'{_XML}<worksheet xmlns="{main}"><sheetData>{"".join(rows)}</sheetData></worksheet>'
    workbook = (
        f'{_XML}<workbook xmlns="{main}" xmlns:r="{_OFFICE_REL}"><sheets>'
        '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )
    return _zip(
        [
            (
                "[Content_Types].xml",
                _content_types(
                    {
                        "/xl/workbook.xml": SHEET_MAIN_CT,
                        "/xl/worksheets/sheet1.xml": SHEET_CT,
                    }
                ),
            ),
            ("_rels/.rels", _rels("officeDocument", "xl/workbook.xml")),
            ("xl/workbook.xml", workbook),
            ("xl/_rels/workbook.xml.rels", _rels("worksheet", "worksheets/sheet1.xml")),
            ("xl/worksheets/sheet1.xml", sheet),
        ]
    )


def make_docx(variant: int, label: str = "") -> bytes:
    """A minimal WordprocessingML document with a few paragraphs."""
    rng = random.Random(variant)
    paragraphs = [f"Kontrak kerja sama {label}", f"Nomor dokumen {variant}"]
    paragraphs += [f"Pasal {i}: ketentuan umum." for i in range(1, rng.randint(2, 5))]
    body = "".join(f"<w:p><w:r><w:t>{_xml_text(p)}</w:t></w:r></w:p>" for p in paragraphs)
    ns = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    document = f'{_XML}<w:document xmlns:w="{ns}"><w:body>{body}</w:body></w:document>'
    return _zip(
        [
            ("[Content_Types].xml", _content_types({"/word/document.xml": WORD_MAIN_CT})),
            ("_rels/.rels", _rels("officeDocument", "word/document.xml")),
            ("word/document.xml", document),
        ]
    )


def make_csv(variant: int, label: str = "") -> bytes:
    """A small UTF-8 CSV contact list."""
    rng = random.Random(variant)
    lines = ["nama,email,telepon"]
    for i in range(rng.randint(2, 8)):
        phone = f"+62812{variant % 10**6:06d}"
        lines.append(f"Kontak {i + 1} {_ascii(label)},kontak{i + 1}@contoh.co.id,{phone}")
    return ("\n".join(lines) + "\n").encode("utf-8")


BUILDERS = {
    "png": make_png,
    "jpeg": make_jpeg,
    "mp3": make_mp3,
    "m4a": make_m4a,
    "pdf": make_pdf,
    "xlsx": make_xlsx,
    "docx": make_docx,
    "csv": make_csv,
}


def make_file(ext: str, variant: int, label: str = "") -> tuple[bytes, str]:
    """Bytes and content type of a synthetic file of type ``ext``."""
    return BUILDERS[ext](variant, label), FILE_TYPES[ext][1]
