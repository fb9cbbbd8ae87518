"""Rule 6: type map, voice-note rule, deterministic keys/proxy URLs, magic bytes."""

import io
import struct
import zipfile
from types import SimpleNamespace

import pytest

from notes_pipeline.contact_notes.load import copy_attachment
from notes_pipeline.contact_notes.records import PlannedAttachment
from notes_pipeline.contact_notes.rules.attachments import (
    ACCEPTED_KINDS,
    CDP_ATTACHMENT_TYPES,
    SNIFF_HEAD_BYTES,
    cdp_type_for,
    default_file_name,
    is_generic_type,
    magic_matches,
    map_attachment_type,
    plan_attachments,
    safe_file_name,
    sniff_type,
    target_key,
)
from notes_pipeline.core.crm_records import CrmAttachment
from notes_pipeline.core.resources.attachment_download import AttachmentError
from notes_pipeline.core.vocabulary import AttachmentCode

COMPANY = "3f1c2b9e-0000-4000-8000-000000000001"
PROXY = "https://cdp.example.com/attachments/"


def att(asset_id="a1", kind="document", name="f.bin", ct=None, size=10, url=None):
    url = url or f"https://crm-bucket.s3.amazonaws.com/uploads/{asset_id}/{name}"
    return CrmAttachment(asset_id, kind, url, name, ct, size)


def _zip(member: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(member, "<xml/>")
    return buf.getvalue()


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00"
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00"
MP3_ID3 = b"ID3\x04\x00\x00\x00\x00\x00\x23TSSE\x00\x00\x00\x0f"
MP3_SYNC = b"\xff\xfb\x90\x64\x00\x00\x00\x00"
M4A = b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom\x00\x00\x00\x00"
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
OGG = b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00"
WAV = b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"
XLSX = _zip("xl/workbook.xml")
DOCX = _zip("word/document.xml")
OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 16
CSV = b"name,email,amount\nAlice,a@example.com,10\n"
HTML = b"<!DOCTYPE html>\n<html><body>Access denied</body></html>"


@pytest.mark.parametrize(
    ("kind", "name", "ct", "expected"),
    [
        ("image", "photo.bin", None, "image"),
        ("image", "photo.jpg", "application/octet-stream", "image"),
        ("document", "scan.png", "image/png", "image"),
        ("audio", "rec.mp3", "audio/mpeg", "voice_note"),
        ("audio", "rec", None, "voice_note"),
        ("document", "clip.mp4", "video/mp4", "video"),
        ("document", "clip.MOV", None, "video"),
        ("document", "Contract.PDF", None, "pdf"),
        ("document", "contract", "application/pdf", "pdf"),
        ("document", "a.xlsx", None, "xlsx"),
        ("document", "a.xls", None, "xlsx"),
        ("document", "a.csv", None, "xlsx"),
        ("document", "report", "application/vnd.ms-excel", "xlsx"),
        (
            "document",
            "report",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        ),
        ("document", "report", "text/csv; charset=utf-8", "xlsx"),
        ("document", "letter.docx", None, "doc"),
        ("document", "notes.txt", "text/plain", "doc"),
        ("document", "archive.zip", "application/zip", "doc"),
        ("document", "noext", None, "doc"),
    ],
)
def test_map_attachment_type(kind, name, ct, expected):
    result = map_attachment_type(att(kind=kind, name=name, ct=ct))
    assert result == expected
    assert result in CDP_ATTACHMENT_TYPES


def test_voice_note_rule_keeps_first_audio_only():
    attachments = [
        att("a1", "audio", "first.m4a", "audio/mp4"),
        att("a2", "audio", "second.mp3", "audio/mpeg"),
    ]
    planned, dropped = plan_attachments(COMPANY, "42", attachments, PROXY)
    assert [(p.asset_id, p.cdp_type) for p in planned] == [("a1", "voice_note")]
    assert len(dropped) == 1
    assert dropped[0].asset_id == "a2"
    assert dropped[0].reason_code == AttachmentCode.ATTACHMENT_EXTRA_VOICE_NOTE
    assert "second" not in dropped[0].details


def test_plan_orders_images_audios_documents_and_keeps_given_order_within_kind():
    attachments = [
        att("d5", "document", "b.pdf"),
        att("a3", "audio", "v.ogg"),
        att("a9", "image", "z.png"),
        att("d2", "document", "a.docx"),
        att("a4", "image", "y.png"),
    ]
    planned, dropped = plan_attachments(COMPANY, "42", attachments, PROXY)
    assert [p.asset_id for p in planned] == ["a9", "a4", "a3", "d5", "d2"]
    assert [p.cdp_type for p in planned] == ["image", "image", "voice_note", "pdf", "doc"]
    assert dropped == []


def test_keys_and_proxy_urls_are_deterministic_and_company_scoped():
    attachments = [att("a12", "image", "My Photo (1).JPG", "image/jpeg", 1234)]
    first, _ = plan_attachments(COMPANY, "1001", attachments, PROXY)
    second, _ = plan_attachments(COMPANY, "1001", list(attachments), PROXY.rstrip("/"))
    assert first == second
    planned = first[0]
    assert planned.target_key == f"{COMPANY}/1001/a12-My_Photo__1_.JPG"
    assert planned.proxy_url == f"https://cdp.example.com/attachments/{planned.target_key}"
    assert "s3.amazonaws.com" not in planned.proxy_url
    assert planned.source_url == attachments[0].file_url
    assert planned.file_name == "My Photo (1).JPG"
    assert planned.content_type == "image/jpeg"


def test_same_file_name_on_two_assets_gets_two_keys():
    attachments = [att("d1", name="x.pdf"), att("d2", name="x.pdf")]
    planned, _ = plan_attachments(COMPANY, "7", attachments, PROXY)
    assert len({p.target_key for p in planned}) == 2


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("Q3 report (final).xlsx", "Q3_report__final_.xlsx"),
        ("../../etc/passwd", "passwd"),
        ("a/b\\c.txt", "b_c.txt"),
        ("résumé.docx", "r_sum_.docx"),
        ("", "file"),
        ("..", "file"),
        ("???", "___"),
        ("a-b_c.D", "a-b_c.D"),
    ],
)
def test_safe_file_name(name, expected):
    assert safe_file_name(name) == expected


def test_safe_file_name_bounded_and_keeps_extension():
    safe = safe_file_name("x" * 500 + ".pdf")
    assert len(safe) == 200
    assert safe.endswith(".pdf")
    assert safe == safe_file_name("x" * 500 + ".pdf")


@pytest.mark.parametrize(("company", "note"), [("a/b", "1"), (COMPANY, ".."), ("", "1")])
def test_unsafe_key_segments_rejected(company, note):
    with pytest.raises(ValueError):
        plan_attachments(company, note, [att()], PROXY)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (PNG, "png"),
        (JPEG, "jpeg"),
        (GIF, "gif"),
        (WEBP, "webp"),
        (MP3_ID3, "mp3"),
        (MP3_SYNC, "mp3"),
        (M4A, "m4a"),
        (MP4, "mp4"),
        (OGG, "ogg"),
        (WAV, "wav"),
        (PDF, "pdf"),
        (XLSX, "xlsx"),
        (DOCX, "docx"),
        (_zip("readme.txt"), "zip"),
        (OLE, "ole"),
        (CSV, "text"),
        ("name;note\n".encode("utf-16"), "text"),
        (HTML, "html"),
        (b'<?xml version="1.0"?><svg/>', "xml"),
        (b"\x00\x01\x02\x03", None),
        (b"", None),
    ],
)
def test_sniff_type(head, kind):
    assert sniff_type(head) == kind


@pytest.mark.parametrize(
    ("cdp_type", "ct", "name", "head"),
    [
        ("image", "image/png", "a.png", PNG),
        ("image", "image/jpeg", "a.jpg", JPEG),
        ("voice_note", "audio/mpeg", "a.mp3", MP3_ID3),
        ("voice_note", "audio/mpeg", "a.mp3", MP3_SYNC),
        ("voice_note", "audio/mp4", "a.m4a", M4A),
        ("voice_note", "audio/ogg", "a.ogg", OGG),
        ("voice_note", "audio/wav", "a.wav", WAV),
        ("video", "video/mp4", "a.mp4", MP4),
        ("pdf", "application/pdf", "a.pdf", PDF),
        ("xlsx", None, "a.xlsx", XLSX),
        ("xlsx", "application/vnd.ms-excel", "a.xls", OLE),
        ("xlsx", "text/csv", "a.csv", CSV),
        ("doc", None, "a.docx", DOCX),
        ("doc", "application/msword", "a.doc", OLE),
        ("doc", "text/plain", "a.txt", CSV),
        ("doc", None, "a.pdf.doc", PDF),
    ],
)
def test_magic_matches(cdp_type, ct, name, head):
    assert magic_matches(cdp_type, ct, name, head) is True


@pytest.mark.parametrize(
    ("cdp_type", "ct", "name", "head"),
    [
        ("pdf", "application/pdf", "a.pdf", PNG),
        ("image", "image/png", "a.png", HTML),
        ("image", "image/svg+xml", "a.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>'),
        ("image", "image/png", "a.png", PDF),
        ("voice_note", "audio/mpeg", "a.mp3", PNG),
        ("voice_note", "audio/mpeg", "a.mp3", HTML),
        ("video", "video/mp4", "a.mp4", M4A),
        ("xlsx", None, "a.csv", OLE),  # OLE only for Excel names/types (.xls, encrypted .xlsx)
        ("xlsx", "text/csv", "a.csv", OLE),
        ("xlsx", None, "a.xlsx", CSV),  # text only for .csv
        ("xlsx", "text/csv", "a.csv", HTML),
        ("doc", None, "a.docx", HTML),
        ("doc", None, "a.doc", PNG),
        ("doc", None, "a.doc", b"\x00\x01\x02\x03binary"),
        ("pdf", "application/pdf", "a.pdf", b""),
        ("unknown", None, "a.pdf", PDF),
    ],
)
def test_magic_mismatches(cdp_type, ct, name, head):
    assert magic_matches(cdp_type, ct, name, head) is False


# --- issue #8 item 5: file types -----------------------------------------------------------


def _ftyp(major: bytes, compatible: list[bytes], *, size: int | None = None) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body) if size is None else size) + b"ftyp" + body


MDAT = b"\x00\x00\x00\x10mdat" + b"\x00\x01\x02\x03\x04\x05\x06\x07"
OOXML_SHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
OOXML_DOC = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
# An encrypted xlsx/docx: an OLE2 compound file (header, then EncryptionInfo/EncryptedPackage).
ENCRYPTED_OOXML = (
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 16 + b"\x3e\x00\x03\x00\xfe\xff\x09\x00"
) + b"\x00" * 488
AVIS_MSF1 = _ftyp(b"avis", [b"msf1"]) + MDAT
HEIC_BY_COMPATIBLE = _ftyp(b"mif1", [b"mif1", b"heic"]) + MDAT
AVIF_BY_COMPATIBLE = _ftyp(b"msf1", [b"msf1", b"avif"]) + MDAT
MP3_CRC = b"\xff\xfa\x90\x64" + b"\x55" * 28  # MPEG-1 layer III with CRC (FF FA)
MP3_MPEG25 = b"\xff\xe3\x18\xc4" + b"\x55" * 28  # MPEG-2.5 layer III
ADTS_CRC = b"\xff\xf0\x50\x80\x02\x1f\xfc" + b"\x21" * 9  # AAC ADTS with CRC (FF F0)
BMP = b"BM" + struct.pack("<I", 70) + b"\x00\x00\x00\x00" + struct.pack("<I", 54) + b"\x28\x00"
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 44
UNKNOWN_BINARY = bytes(range(0x00, 0x40)) * 4


def _utf16_csv_split_at_512(encoding: str) -> bytes:
    """A UTF-16 CSV (with BOM) whose emoji's surrogate pair straddles byte 512."""
    header = "name;note\r\n"
    row = "Budi;" + "x" * (254 - len(header) - len("Budi;"))  # code units 1..254 after the BOM
    data = ("\ufeff" + header + row + "\U0001f600 ok\r\n" + "Sari;halo\r\n" * 40).encode(encoding)
    return data


def test_utf16le_csv_with_emoji_cut_at_512_is_text_not_mp3():
    data = _utf16_csv_split_at_512("utf-16-le")
    head = data[:512]
    assert head[:2] == b"\xff\xfe"
    assert head[510:512] == b"\x3d\xd8"  # high surrogate of U+1F600, its low half is cut off
    with pytest.raises(UnicodeDecodeError):
        head[2:].decode("utf-16-le")  # the strict decode the old check relied on fails
    assert sniff_type(head) == "text"
    assert sniff_type(head) != "mp3"
    assert magic_matches("xlsx", "text/csv", "kontak.csv", head) is True
    assert magic_matches("xlsx", None, "kontak.csv", head) is True
    assert magic_matches("doc", "text/plain", "kontak.txt", head) is True
    assert magic_matches("voice_note", "audio/mpeg", "kontak.mp3", head) is False
    assert sniff_type(data[:SNIFF_HEAD_BYTES]) == "text"


@pytest.mark.parametrize("cut", [511, 513, 3, 2])
def test_utf16le_head_cut_mid_code_unit_is_still_text(cut):
    head = _utf16_csv_split_at_512("utf-16-le")[:cut]
    assert sniff_type(head) == "text"
    assert magic_matches("xlsx", "text/csv", "a.csv", head) is True


def test_utf16be_csv_with_emoji_cut_is_text():
    data = _utf16_csv_split_at_512("utf-16-be")
    head = data[:512]
    assert head[:2] == b"\xfe\xff"
    assert head[510:512] == b"\xd8\x3d"
    assert sniff_type(head) == "text"
    assert sniff_type(head[:511]) == "text"
    assert magic_matches("xlsx", "text/csv", "a.csv", head) is True


@pytest.mark.parametrize(
    "head",
    [
        b"\xff\xfe" + "a".encode("utf-16-le") + b"\x00\xdc" + "b".encode("utf-16-le"),  # lone low
        b"\xff\xfe" + "a\x01b".encode("utf-16-le"),  # C0 control: not text
        "\ufeffname".encode("utf-32-le"),  # FF FE 00 00: UTF-32, decodes to NUL
        b"\xff\xfe\x90\x64" + b"\x00" * 60,  # BOM + MPEG-looking bytes + NULs
        b"\xfe\xff" + b"\xdc\x00" + b"\x00a",  # big-endian, lone low surrogate
        b"\xff\xfe\x41\xdc\x41\x42\x43\x44",  # lone low surrogate, bytes free of controls
        b"\xfe\xff\xdc\x41\x42\x43\x44\x45",  # the same, big-endian
    ],
)
def test_utf16_bom_is_text_or_nothing_never_audio(head):
    assert sniff_type(head) is None
    assert magic_matches("voice_note", "audio/mpeg", "a.mp3", head) is False
    assert magic_matches("xlsx", "text/csv", "a.csv", head) is False


def test_utf16_bom_alone_is_empty_text():
    assert sniff_type(b"\xff\xfe") == "text"
    assert sniff_type(b"\xfe\xff") == "text"


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (MP3_SYNC, "mp3"),  # FF FB: MPEG-1 layer III (library)
        (MP3_ID3, "mp3"),
        (MP3_CRC, "mp3"),  # FF FA: home-made frame-header rule
        (MP3_MPEG25, "mp3"),
        (b"\xff\xf3\x40\xc4" + b"\x55" * 28, "mp3"),  # MPEG-2 layer III
        (ADTS_CRC, "aac"),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", "aac"),
        (b"\xff\xff\xff\xff" + b"\x00" * 12, None),  # layer I / padding: not an MP3
        (b"\xff\xfb\xf0\x64" + b"\x00" * 12, "mp3"),  # library match (FF FB), bitrate unchecked
        (b"\xff\xfa\xf0\x64" + b"\x00" * 12, None),  # bad bitrate index 15
        (b"\xff\xfa\x9c\x64" + b"\x00" * 12, None),  # reserved sample rate
        (b"\xff\xea\x90\x64" + b"\x00" * 12, None),  # reserved MPEG version
    ],
)
def test_mpeg_audio_frames(head, kind):
    assert sniff_type(head) == kind


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (AVIS_MSF1, "avif"),
        (_ftyp(b"avis", [b"avif", b"avis", b"msf1", b"iso8", b"mif1", b"miaf", b"MA1B"]), "avif"),
        (HEIC_BY_COMPATIBLE, "heic"),
        (AVIF_BY_COMPATIBLE, "avif"),
        (_ftyp(b"heic", [b"mif1", b"heic"]), "heic"),
        (_ftyp(b"heix", [b"mif1", b"heix"]), "heic"),
        (_ftyp(b"hevc", [b"msf1", b"hevc"]), "heic"),
        (_ftyp(b"mif1", [b"mif1", b"miaf"]), "heif"),
        (_ftyp(b"isom", [b"isom", b"avif"]), "avif"),  # generic major: compatible brands decide
        (_ftyp(b"mp42", [b"mp42", b"mif1", b"heic"]), "mp4"),  # a video major brand wins
        (_ftyp(b"M4A ", [b"M4A ", b"mp42", b"isom"]), "m4a"),
        (_ftyp(b"qt  ", [b"qt  "]), "mov"),
        (_ftyp(b"3gp4", [b"isom", b"3gp4"]), "mp4"),
        (_ftyp(b"3gp5", [b"3gp5"]), "mp4"),  # no isom: the library's Mp4 matcher misses it
        # box size bounds the compatible list: 'heic' below sits in the next box, not in ftyp
        (_ftyp(b"isom", [b"isom"]) + b"\x00\x00\x00\x0cheic" + b"\x00" * 4, "mp4"),
        (_ftyp(b"isom", [b"isom", b"heic"], size=20) + b"\x00" * 8, "mp4"),
        # a box bigger than the head: the brands present are read
        (_ftyp(b"mif1", [b"mif1", b"heic"], size=4096), "heic"),
        # size 0: box runs to the end of the file
        (_ftyp(b"isom", [b"avif"], size=0), "avif"),
        # largesize (size 1): 64-bit size after the type, brands after it
        (b"\x00\x00\x00\x01ftyp" + struct.pack(">Q", 28) + b"mif1\x00\x00\x00\x00heic", "heic"),
        (_ftyp(b"heic", [], size=12) + b"\x00" * 16, None),  # too small for the brands
        (b"\x00\x00\x00\x04ftyp", None),
    ],
)
def test_isobmff_brands(head, kind):
    assert sniff_type(head) == kind


@pytest.mark.parametrize("head", [AVIS_MSF1, HEIC_BY_COMPATIBLE, AVIF_BY_COMPATIBLE])
def test_heif_avif_by_compatible_brands_accepted_as_image(head):
    assert magic_matches("image", "image/avif", "a.avif", head) is True
    assert magic_matches("video", "video/mp4", "a.mp4", head) is False


@pytest.mark.parametrize(
    ("cdp_type", "ct", "name"),
    [
        ("xlsx", OOXML_SHEET, "book.xlsx"),
        ("xlsx", OOXML_SHEET, None),
        ("xlsx", None, "book.xlsx"),
        ("xlsx", "application/octet-stream", "Book.XLSX"),
        ("xlsx", "application/vnd.ms-excel", "book.xls"),
        ("doc", OOXML_DOC, "letter.docx"),
        ("doc", None, "letter.docx"),
        ("doc", "application/msword", "letter.doc"),
    ],
)
def test_encrypted_ooxml_is_accepted(cdp_type, ct, name):
    assert sniff_type(ENCRYPTED_OOXML) == "ole"
    assert sniff_type(ENCRYPTED_OOXML[:8]) == "ole"
    assert magic_matches(cdp_type, ct, name, ENCRYPTED_OOXML) is True


@pytest.mark.parametrize(
    ("cdp_type", "ct", "name"),
    [
        ("xlsx", "text/csv", "book.csv"),
        ("image", "image/png", "a.png"),
        ("pdf", "application/pdf", "a.pdf"),
    ],
)
def test_ole_rejected_where_it_cannot_be(cdp_type, ct, name):
    assert magic_matches(cdp_type, ct, name, ENCRYPTED_OOXML) is False


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"BMW;Seri 3;2019\r\nBMI;22;ok\r\n", "text"),  # 'BM' on a CSV is not a bitmap
        (b"ID3 report,2024\n", "text"),
        (b"%!important,note\n", "text"),
        (BMP, "bmp"),
        (b"GIF89a<script>alert(1)</script>", "text"),  # printable polyglot: not an image
        (b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\nendobj\n", "pdf"),  # all-ASCII PDF
        (b"{\\rtf1\\ansi Hello}", "rtf"),
        (ELF, "elf"),
        (b"\xef\xbb\xbfname,email\n", "text"),  # UTF-8 BOM: text or nothing
        (b"\xef\xbb\xbf\x89PNG\r\n\x1a\n\x00\x00", None),
        (b"\xef\xbb\xbf<html><body>x</body></html>", "html"),
    ],
)
def test_short_printable_signatures_and_text(head, kind):
    assert sniff_type(head) == kind


@pytest.mark.parametrize(
    ("cdp_type", "ct", "name", "head", "expected"),
    [
        ("image", "image/bmp", "a.bmp", BMP, True),
        ("image", "image/bmp", "a.bmp", b"BMW;Seri 3;2019\r\n", False),
        ("image", "image/gif", "a.gif", b"GIF89a<script>alert(1)</script>", False),
        ("doc", "application/rtf", "a.rtf", b"{\\rtf1\\ansi Hello}", True),
        ("doc", None, "a.bin", ELF, False),
        ("xlsx", "text/csv", "a.csv", b"BMW;Seri 3;2019\r\n", True),
    ],
)
def test_magic_outcomes_for_edge_kinds(cdp_type, ct, name, head, expected):
    assert magic_matches(cdp_type, ct, name, head) is expected


# --- generic declared type -> the type the bytes show ----------------------------------------


def planned(cdp_type="doc", name="blob", ct="application/octet-stream", asset_id="d1"):
    return PlannedAttachment(
        asset_id=asset_id,
        source_url=f"https://crm-bucket.s3.amazonaws.com/uploads/{asset_id}",
        cdp_type=cdp_type,
        file_name=name,
        target_key=f"{COMPANY}/1/{asset_id}-{name}",
        proxy_url=f"{PROXY}{COMPANY}/1/{asset_id}-{name}",
        content_type=ct,
    )


@pytest.mark.parametrize(
    ("ct", "expected"),
    [
        (None, True),
        ("", True),
        ("application/octet-stream", True),
        ("Binary/Octet-Stream; charset=binary", True),
        ("application/pdf", False),
        ("text/plain", False),
    ],
)
def test_is_generic_type(ct, expected):
    assert is_generic_type(ct) is expected


@pytest.mark.parametrize(
    ("plan", "head", "expected_type", "magic_ok"),
    [
        (planned(), PNG, "image", True),
        (planned(), PDF, "pdf", True),
        (planned(ct="binary/octet-stream"), JPEG, "image", True),
        (planned(ct=None), PDF, "pdf", True),
        (planned(ct=""), XLSX, "xlsx", True),
        (planned(), DOCX, "doc", True),
        (planned(), MP4, "video", True),
        (planned(), AVIS_MSF1, "image", True),
        (planned(), ENCRYPTED_OOXML, "doc", True),
        (planned(), CSV, "doc", True),
        (planned(), _utf16_csv_split_at_512("utf-16-le")[:512], "doc", True),  # never voice_note
        (planned(), UNKNOWN_BINARY, "doc", False),  # bytes show nothing known: stays doc, refused
        (planned(), ELF, "doc", False),
        (planned(), HTML, "doc", False),
        (planned(), b"", "doc", False),
        # copy time never adds a voice note (one per note, chosen at plan time)
        (planned(), MP3_SYNC, "doc", False),
        # a planned voice note stays one while the bytes are audio, even in an MP4 box
        (planned("voice_note", "rec"), MP4, "voice_note", True),
        (planned("voice_note", "rec"), MP3_CRC, "voice_note", True),
        (planned("voice_note", "rec"), PNG, "image", True),
        (planned("image", "photo"), PDF, "pdf", True),
        # the name's extension decides: the plan stands and the bytes must match it
        (planned("pdf", "report.pdf"), PNG, "pdf", False),
        (planned("xlsx", "kontak.csv"), CSV, "xlsx", True),
        (planned("video", "clip.mov"), MP4, "video", True),
        # a specific declared type decides: no sniffing
        (planned("pdf", "report", "application/pdf"), PNG, "pdf", False),
        (planned("doc", "letter", "application/msword"), PNG, "doc", False),
    ],
)
def test_cdp_type_for_generic_declared_type(plan, head, expected_type, magic_ok):
    cdp_type = cdp_type_for(plan, head)
    assert cdp_type == expected_type
    assert magic_matches(cdp_type, plan.content_type, plan.file_name, head) is magic_ok


class _Downloader:
    def __init__(self, data: bytes, served: str | None):
        self.data, self.served = data, served

    def download(self, url):
        return self.data, self.served


class _Storage:
    def __init__(self):
        self.put_calls = []

    def put(self, key, data, content_type):
        self.put_calls.append((key, len(data), content_type))


def _ctx(data: bytes, served: str | None = "application/octet-stream"):
    return SimpleNamespace(downloader=_Downloader(data, served), storage=_Storage())


@pytest.mark.parametrize(
    ("head", "expected_type", "stored_type"),
    [
        (PNG, "image", "image/png"),
        (PDF, "pdf", "application/pdf"),
        (XLSX, "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        (AVIS_MSF1, "image", "image/avif"),
    ],
)
def test_copy_attachment_writes_the_sniffed_type(head, expected_type, stored_type):
    att = planned()
    ctx = _ctx(head + b"\x00" * 100)
    entry = copy_attachment(ctx, None, att)
    assert entry == {
        "type": expected_type,
        "url": att.proxy_url,
        "file_name": "blob",
        "file_size_in_byte": len(head) + 100,
    }
    assert ctx.storage.put_calls == [(att.target_key, len(head) + 100, stored_type)]


def test_a_polyglot_declared_html_is_stored_as_what_its_bytes_are():
    """A PNG+script polyglot declared (and served) as text/html passes the image check, but
    is stored as image/png: the CDP proxy can never serve it as HTML (stored XSS)."""
    att = planned(cdp_type="image", name="p.png", ct="text/html")
    ctx = _ctx(PNG + b"<script>alert(1)</script>", served="text/html")
    copy_attachment(ctx, None, att)
    assert [call[2] for call in ctx.storage.put_calls] == ["image/png"]


def test_copy_attachment_refuses_unknown_binary_with_codes_only():
    ctx = _ctx(UNKNOWN_BINARY)
    with pytest.raises(AttachmentError) as caught:
        copy_attachment(ctx, None, planned(name="secret-name.bin"))
    assert caught.value.reason_code == AttachmentCode.ATTACHMENT_TYPE_MISMATCH
    assert caught.value.details == "declared doc"
    assert ctx.storage.put_calls == []


def test_copy_attachment_accepts_encrypted_xlsx_and_utf16_csv():
    xlsx = planned("xlsx", "book.xlsx", OOXML_SHEET)
    assert copy_attachment(_ctx(ENCRYPTED_OOXML), None, xlsx)["type"] == "xlsx"
    csv = planned("xlsx", "kontak.csv", "text/csv")
    data = _utf16_csv_split_at_512("utf-16-le")
    assert copy_attachment(_ctx(data), None, csv)["type"] == "xlsx"


# --- NULL file names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asset_id", "ct", "expected"),
    [
        ("a123", None, "a123"),
        ("a123", "application/octet-stream", "a123"),
        ("a123", "image/png", "a123.png"),
        ("a123", "Image/JPEG; q=1", "a123.jpg"),
        ("a7", "audio/mpeg", "a7.mp3"),
        ("d9", "application/pdf", "d9.pdf"),
        ("d9", "text/csv", "d9.csv"),
        ("d9", OOXML_SHEET, "d9.xlsx"),
        ("d9", "application/x-made-up", "d9"),
    ],
)
def test_default_file_name(asset_id, ct, expected):
    assert default_file_name(asset_id, ct) == expected


@pytest.mark.parametrize(
    ("kind", "name", "ct", "cdp_type", "file_name"),
    [
        ("image", None, "image/png", "image", "a1.png"),
        ("image", None, None, "image", "a1"),
        ("audio", None, "audio/mpeg", "voice_note", "a1.mp3"),
        ("document", None, "application/pdf", "pdf", "a1.pdf"),
        ("document", None, "application/octet-stream", "doc", "a1"),
        ("document", "", None, "doc", "a1"),
        ("document", "   ", "text/csv", "xlsx", "a1.csv"),
    ],
)
def test_null_file_name_plans_a_safe_name_from_the_asset_id(kind, name, ct, cdp_type, file_name):
    attachment = CrmAttachment("a1", kind, "https://crm/x", name, ct, 5)
    assert map_attachment_type(attachment) == cdp_type
    planned_list, dropped = plan_attachments(COMPANY, "42", [attachment], PROXY)
    assert dropped == []
    (only,) = planned_list
    assert only.file_name == file_name
    assert only.cdp_type == cdp_type
    assert only.target_key == f"{COMPANY}/42/a1-{file_name}"
    assert only.proxy_url == f"https://cdp.example.com/attachments/{COMPANY}/42/a1-{file_name}"


def test_null_file_name_helpers_never_raise():
    assert safe_file_name(None) == "file"
    assert target_key(COMPANY, "42", "a5", None) == f"{COMPANY}/42/a5-a5"
    assert magic_matches("pdf", None, None, PDF) is True
    assert magic_matches("xlsx", "text/csv", None, CSV) is True
    assert magic_matches("xlsx", None, None, CSV) is False


@pytest.mark.parametrize(
    ("name", "ct", "expected"),
    [
        ("clip.mov", "application/octet-stream", "video"),  # generic type: the name decides
        ("report.pdf", "binary/octet-stream", "pdf"),
        ("kontak.csv", "application/octet-stream", "xlsx"),
        ("photo.png", "application/octet-stream", "doc"),  # bytes decide at copy time
        ("clip.mov", "application/zip", "doc"),  # a specific type still wins over the name
    ],
)
def test_generic_declared_type_counts_as_none_at_plan_time(name, ct, expected):
    assert map_attachment_type(att(kind="document", name=name, ct=ct)) == expected


def test_accepted_kinds_cover_every_cdp_type_and_sniffed_types_are_cdp_types():
    assert set(ACCEPTED_KINDS) == set(CDP_ATTACHMENT_TYPES)
    for head in (PNG, PDF, XLSX, DOCX, MP4, M4A, OGG, WAV, CSV, AVIS_MSF1, ENCRYPTED_OOXML):
        assert cdp_type_for(planned(), head) in CDP_ATTACHMENT_TYPES
