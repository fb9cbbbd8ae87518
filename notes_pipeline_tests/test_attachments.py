"""Rule 6: type map, voice-note rule, deterministic keys/proxy URLs, magic bytes."""

import io
import zipfile

import pytest

from notes_pipeline.reason_codes import ATTACHMENT_EXTRA_VOICE_NOTE
from notes_pipeline.transform.attachments import (
    CDP_ATTACHMENT_TYPES,
    SIGNATURES,
    CrmAttachment,
    magic_matches,
    map_attachment_type,
    plan_attachments,
    safe_file_name,
    sniff_type,
)

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
    assert dropped[0].reason_code == ATTACHMENT_EXTRA_VOICE_NOTE
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
    assert planned.declared_size == 1234
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
        (XLSX, "zip"),
        (DOCX, "zip"),
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
        ("xlsx", None, "a.xlsx", OLE),  # OLE only for legacy .xls
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


def test_signature_table_is_documented():
    assert all(sig.note and sig.parts for sig in SIGNATURES)
