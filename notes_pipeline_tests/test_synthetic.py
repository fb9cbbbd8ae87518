"""Synthetic CRM generator: pure dataset checks, then stack checks of the writer."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import urllib.request
import zipfile
import zlib
from collections import Counter
from datetime import timedelta

import pytest

from devtools.synthetic import build_dataset, decoy_company_sso_id, profile_sizes
from devtools.synthetic.__main__ import main as cli_main
from devtools.synthetic.dataset import FK_SHAPES, NOTE_TYPES, TABLES
from devtools.synthetic.files import (
    FILE_TYPES,
    SHEET_MAIN_CT,
    WORD_MAIN_CT,
    make_docx,
    make_xlsx,
)
from devtools.synthetic.summary import EXT_BY_CONTENT_TYPE
from devtools.synthetic.writer import COLUMNS, _csv_value, crm_rows

ALLOWED = {1, 6}
KEY_RE = re.compile(r"^orgs/(\d+)/notes/(\d+)/(\d+)-([A-Za-z0-9_.-]+)$")


@pytest.fixture(scope="module")
def stage1():
    return build_dataset("stage1")


@pytest.fixture(scope="module")
def full():
    return build_dataset("full")


@pytest.fixture(scope="module")
def both(stage1, full):
    return {"stage1": stage1, "full": full}


def _notes_of(ds, cid):
    return [n for n in ds.crm_notes if n["organization_id"] == cid]


def _in_scope(notes):
    return [n for n in notes if n["crm_person_id"] is not None and n["crm_note_type_id"] in ALLOWED]


# --- sizes ----------------------------------------------------------------------


def test_stage1_has_exactly_two_cids_with_100_and_5000_notes(stage1):
    counts = Counter(n["organization_id"] for n in stage1.crm_notes)
    assert [o["id"] for o in stage1.organizations] == [1001, 1002]
    assert counts == {1001: 100, 1002: 5000}
    per_cid = stage1.summary()["per_cid"]
    assert per_cid["1001"]["notes_total"] == 100
    assert per_cid["1002"]["notes_total"] == 5000


def test_full_has_about_130_skewed_cids(full):
    counts = Counter(n["organization_id"] for n in full.crm_notes)
    assert 120 <= len(full.organizations) <= 140
    assert set(counts) <= {o["id"] for o in full.organizations}
    assert 20_000 <= sum(counts.values()) <= 22_000
    sizes = [counts[o["id"]] for o in full.organizations]
    assert max(sizes) >= 10 * statistics.median(sizes)
    assert sum(1 for s in sizes if s >= 1500) >= 3
    assert sum(1 for s in sizes if 10 <= s <= 150) >= 100
    assert [o["id"] for o in full.organizations][0] == 2001
    assert dict(profile_sizes("full")) == {o["id"]: counts[o["id"]] for o in full.organizations}


def test_summary_counts_agree_with_rows(both):
    for ds in both.values():
        summary = ds.summary()
        assert summary["rows"] == {t: len(ds.table(t)) for t in TABLES}
        assert summary["totals"]["notes_total"] == len(ds.crm_notes)
        assert summary["totals"]["in_scope_notes"] == len(_in_scope(ds.crm_notes))
        assert summary["totals"]["attachments"]["total"] == len(ds.objects)
        assert summary["totals"]["checkins"] == len(ds.crm_checkins)
        assert summary["contact_documents"] == len(ds.contacts)


def test_unknown_profile_is_rejected():
    with pytest.raises(ValueError):
        build_dataset("huge")


# --- cases present ----------------------------------------------------------------


@pytest.mark.parametrize("profile", ["stage1", "full"])
def test_every_fk_shape_and_note_type_is_present(both, profile):
    totals = both[profile].summary()["totals"]
    assert set(totals["by_fk_shape"]) == set(FK_SHAPES)
    assert set(totals["by_note_type"]) == {str(t) for t in NOTE_TYPES}
    assert totals["by_note_type"]["1"] + totals["by_note_type"]["6"] > totals["notes_total"] / 3
    activities = sum(totals["by_note_type"][str(t)] for t in (2, 3, 4, 5, 7))
    assert activities > totals["notes_total"] / 5
    assert set(totals["by_sti_type"]) == {
        "Crm::PersonNote",
        "Crm::DealNote",
        "Crm::CompanyNote",
        "Crm::TicketNote",
    }
    multi = [
        n
        for n in both[profile].crm_notes
        if n["crm_person_id"] and n["crm_deal_id"] and n["type"] == "Crm::DealNote"
    ]
    assert multi, "person+deal note typed Crm::DealNote"


@pytest.mark.parametrize("profile", ["stage1", "full"])
def test_rich_html_cases_are_present(both, profile):
    html = [n["note"] or "" for n in _in_scope(both[profile].crm_notes)]
    needles = {
        "mention data-user-id": re.compile(r'<a data-user-id="\d+">@[^<]+</a>'),
        "mention edit_user href": re.compile(r'<a href="https://[^"]+/users/\d+/edit_user">@'),
        "style": re.compile(r'style="'),
        "script": re.compile(r"<script>"),
        "onclick": re.compile(r"onclick="),
        "img onerror": re.compile(r"<img src=x onerror="),
        "javascript link": re.compile(r'href="javascript:'),
        "http link": re.compile(r'href="http://'),
        "https link": re.compile(r'href="https://www'),
        "mailto link": re.compile(r'href="mailto:'),
        "list": re.compile(r"<(ul|ol)><li>"),
        "bold/italic": re.compile(r"<b>.*<i>"),
        "emoji": re.compile("[\U0001f300-\U0001faff]"),
        "indonesian": re.compile(r"Terima kasih|Pelanggan|penawaran"),
        "no markup at all": re.compile(r"^[^<]+$"),
    }
    for label, pattern in needles.items():
        assert any(pattern.search(h) for h in html), label


@pytest.mark.parametrize("profile", ["stage1", "full"])
def test_people_and_creator_cases_are_present(both, profile):
    totals = both[profile].summary()["totals"]
    for key in (
        "null_creator_notes",
        "dangling_creator_notes",
        "creator_without_identity_notes",
        "deactivated_creator_notes",
        "checkins",
    ):
        assert totals[key] > 0, key
        assert totals["in_scope"][key] > 0, key
    assert totals["users_deactivated"] > 0
    assert totals["users_without_identity"] > 0
    # ~0.5 % of persons with notes are unmapped; their in-scope notes stay <= 0.5 %
    assert 0 < totals["persons_unmapped"] <= 0.0075 * totals["persons_with_notes"]
    assert 0 < totals["in_scope"]["unmapped_person_notes"] <= 0.005 * totals["in_scope_notes"]


@pytest.mark.parametrize("profile", ["stage1", "full"])
def test_timestamps_use_non_utc_offsets_and_are_ordered(both, profile):
    notes = both[profile].crm_notes
    valid = [n for n in notes if n["created_at"] and n["updated_at"]]
    offsets = {n["created_at"].utcoffset() for n in valid}
    assert offsets == {timedelta(hours=h) for h in (7, 8, 9)}
    assert all(n["updated_at"] >= n["created_at"] for n in valid)
    assert sum(n["updated_at"] != n["created_at"] for n in valid) > len(valid) / 3
    years = {n["created_at"].year for n in valid}
    assert len(years) >= 4
    assert any(n["created_at"] is None for n in notes)


@pytest.mark.parametrize("profile", ["stage1", "full"])
def test_attachment_cases_are_present(both, profile):
    att = both[profile].summary()["totals"]["in_scope"]["attachments"]
    for ext in FILE_TYPES:
        assert att[ext] > 0, ext
    assert att["notes_with_one"] > 0 and att["notes_with_several"] > 0
    assert att["notes_with_two_audios"] > 0
    totals = both[profile].summary()["totals"]
    share = totals["attachments"]["notes_with_any"] / totals["notes_total"]
    assert 0.25 <= share <= 0.35


def test_edge_cases_in_scope_are_small_and_stage1_1001_is_clean(stage1):
    per_cid = stage1.summary()["per_cid"]
    clean = per_cid["1001"]["expected"]
    assert clean["failed"] == 0 and clean["ready"] == per_cid["1001"]["in_scope_notes"]
    big = per_cid["1002"]["expected"]
    for reason in ("CONTACT_NOT_MAPPED", "NOTE_EMPTY", "NOTE_TOO_LONG", "INVALID_TIMESTAMP"):
        assert big[reason] > 0, reason
    assert big["failure_pct"] < 1.0
    assert big["contact_coverage_pct"] >= 99.5
    assert big["extra_voice_notes_dropped"] > 0
    assert per_cid["1002"]["empty_notes"] > per_cid["1002"]["in_scope"]["empty_notes"]


def test_full_profile_stays_under_the_gates_and_has_a_cid_without_person_notes(full):
    per_cid = full.summary()["per_cid"]
    assert all(c["expected"]["failure_pct"] <= 1.0 for c in per_cid.values())
    assert all(c["expected"]["contact_coverage_pct"] >= 99.0 for c in per_cid.values())
    assert [c["cid"] for c in per_cid.values() if c["person_notes"] == 0] == [2130]


def _spec_sanitize(html: str) -> str:
    """The SPEC's sanitizer, closely enough to check the planned outcomes."""
    nh3 = pytest.importorskip("nh3")
    html = re.sub(r"<a [^>]*(data-user-id|/edit_user)[^>]*>(@[^<]*)</a>", r"\2", html)
    tags = {
        "a",
        "b",
        "i",
        "strong",
        "em",
        "u",
        "s",
        "span",
        "br",
        "div",
        "p",
        "ul",
        "ol",
        "li",
        "blockquote",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "pre",
    }
    return nh3.clean(
        html,
        tags=tags,
        attributes={"a": {"href"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow noopener",
    )


def test_planned_content_outcomes_match_a_real_sanitizer(stage1):
    for note in _in_scope(stage1.crm_notes):
        tags = stage1.note_tags[note["id"]]
        clean = _spec_sanitize(note["note"] or "")
        if "empty" in tags:
            assert clean.strip() == "", note["id"]
            continue
        assert clean.strip(), note["id"]
        assert "<script" not in clean and "onclick" not in clean and "style=" not in clean
        assert "javascript:" not in clean and "data-user-id" not in clean
        if "too_long" in tags:
            assert len(clean) > 10_000
        else:
            assert len(clean) <= 10_000, note["id"]
        if "long_ok" in tags:
            assert len(note["note"]) > 10_000


# --- files ------------------------------------------------------------------------


def _png_ok(data: bytes) -> bool:
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + body)
        idat += body if tag == b"IDAT" else b""
        pos += 12 + length
    width, height = struct.unpack(">II", data[16:24])
    return len(zlib.decompress(idat)) == height * (1 + 3 * width) and tag == b"IEND"


def _check_magic(ext: str, data: bytes) -> None:
    if ext == "png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and _png_ok(data)
    elif ext == "jpeg":
        assert data.startswith(b"\xff\xd8\xff") and data.endswith(b"\xff\xd9")
    elif ext == "mp3":
        assert data.startswith(b"ID3")
        size = sum(b << (7 * (3 - i)) for i, b in enumerate(data[6:10]))
        assert data[10 + size] == 0xFF and data[11 + size] & 0xE0 == 0xE0
    elif ext == "m4a":
        assert data[4:12] == b"ftypM4A "
    elif ext == "pdf":
        assert data.startswith(b"%PDF-1.4") and data.rstrip().endswith(b"%%EOF")
        xref_at = int(data.rsplit(b"startxref", 1)[1].split()[0])
        assert data[xref_at : xref_at + 4] == b"xref"
    elif ext in ("xlsx", "docx"):
        assert data.startswith(b"PK\x03\x04")
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert archive.testzip() is None
            types = archive.read("[Content_Types].xml").decode()
            main = SHEET_MAIN_CT if ext == "xlsx" else WORD_MAIN_CT
            assert main in types
            assert ("xl/workbook.xml" if ext == "xlsx" else "word/document.xml") in (
                archive.namelist()
            )
    elif ext == "csv":
        assert data.decode("utf-8").startswith("nama,email,telepon\n")


def test_every_attachment_matches_its_declared_type_and_size(stage1):
    rows = stage1.assets + stage1.crm_note_attachments
    assert len(rows) == len(stage1.objects)
    seen = Counter()
    for row in rows:
        obj = stage1.objects[row["key"]]
        assert obj.content_type == row["content_type"]
        assert len(obj.data) == row["file_size"]
        assert 100 <= row["file_size"] <= 8_000
        ext = EXT_BY_CONTENT_TYPE[row["content_type"]]
        _check_magic(ext, obj.data)
        seen[ext] += 1
    assert set(seen) == set(FILE_TYPES)
    assert {r["kind"] for r in stage1.assets} == {"image", "audio"}


def test_attachment_keys_and_ids(stage1, full):
    for ds in (stage1, full):
        notes = {n["id"]: n for n in ds.crm_notes}
        for table, note_col in (
            ("assets", "assetable_id"),
            ("crm_note_attachments", "crm_note_id"),
        ):
            rows = ds.table(table)
            assert len({r["id"] for r in rows}) == len(rows), table
            for r in rows:
                cid, note_id, row_id, name = KEY_RE.match(r["key"]).groups()
                assert (int(note_id), int(row_id), name) == (r[note_col], r["id"], r["file_name"])
                assert int(cid) == notes[r[note_col]]["organization_id"]
    rows = list(crm_rows(stage1, "assets", "http://s3.local/bucket/"))
    url = rows[0][COLUMNS["assets"].index("file_url")]
    assert url == f"http://s3.local/bucket/{stage1.assets[0]['key']}"


def test_office_files_are_byte_identical_across_builds():
    assert make_xlsx(7, "x") == make_xlsx(7, "x")
    assert make_docx(7, "x") == make_docx(7, "x")
    assert make_xlsx(7, "x") != make_xlsx(8, "x")


# --- contacts and identity -----------------------------------------------------------


def test_contacts_and_identity_rows(stage1):
    ids = [c["_id"] for c in stage1.contacts]
    assert len(set(ids)) == len(ids)
    orgs = {o["id"]: o["company_sso_id"] for o in stage1.organizations}
    contacts = {(c["company_sso_id"], c["crm_data"]["id"]) for c in stage1.contacts}
    for person in stage1.crm_people:
        own = (orgs[person["organization_id"]], str(person["id"])) in contacts
        decoy = (decoy_company_sso_id(orgs[person["organization_id"]]), str(person["id"]))
        assert own != (decoy in contacts), person["id"]  # unmapped persons only in a decoy tenant
    for c in stage1.contacts:
        assert c["source"] == "crm" and c["source_id"] == c["crm_data"]["id"]
        assert set(c) == {
            "_id",
            "company_sso_id",
            "name",
            "crm_data",
            "source",
            "source_id",
            "created_at",
        }
    emails = {u["email"] for u in stage1.users}
    assert all(r["email"] in emails for r in stage1.sso_users)
    assert any(u["email"] is None for u in stage1.users)


# --- determinism -----------------------------------------------------------------------


def test_same_seed_same_dataset_other_seed_other_dataset(stage1):
    assert build_dataset("stage1", 42).fingerprint() == stage1.fingerprint()
    other = build_dataset("stage1", 43)
    assert other.fingerprint() != stage1.fingerprint()
    assert other.organizations[0]["company_sso_id"] != stage1.organizations[0]["company_sso_id"]
    assert [n["note"] for n in other.crm_notes[:50]] != [n["note"] for n in stage1.crm_notes[:50]]


def test_fingerprint_is_stable_across_processes(stage1):
    code = (
        "from devtools.synthetic import build_dataset;print(build_dataset('stage1').fingerprint())"
    )
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        assert out == stage1.fingerprint()


# --- writer helpers and CLI ---------------------------------------------------------------


def test_copy_csv_values_keep_null_apart_from_empty_text():
    assert _csv_value(None) == "\\N"
    assert _csv_value("") == '""'
    assert _csv_value('say "hi"\n') == '"say ""hi""\n"'
    assert _csv_value("\\N") == '"\\N"'
    assert _csv_value(12) == "12"


def test_cli_summary_prints_json(capsys):
    assert cli_main(["summary", "--profile", "stage1", "--totals-only"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["totals"]["notes_total"] == 5100 and "per_cid" not in out


# --- stack ---------------------------------------------------------------------------------


def _targets(mongo_db):
    from dataclasses import replace

    from devtools.synthetic.writer import Targets

    return replace(Targets.from_env(), mongo_db=mongo_db.name)


@pytest.fixture(scope="module")
def seeded(stage1, mongo_db):
    from devtools.synthetic.writer import seed

    result = seed(stage1, _targets(mongo_db))
    return result


_OF_NOTES = "IN (SELECT id FROM crm_notes WHERE organization_id = ANY(%(cids)s))"
SCOPE = {
    "organizations": "id = ANY(%(cids)s)",
    "crm_note_types": "true",
    "assets": f"assetable_id {_OF_NOTES}",
    "crm_note_attachments": f"crm_note_id {_OF_NOTES}",
    "crm_checkins": f"crm_note_id {_OF_NOTES}",
    "sso_users": "company_sso_id = ANY(%(csids)s)",
}


def _table_state(conn, ds, table: str) -> tuple:
    """Row count and content hash of the dataset's rows of a table (others share the DB)."""
    where = SCOPE.get(table, "organization_id = ANY(%(cids)s)")
    order = "company_sso_id, email" if table == "sso_users" else "id"
    params = {
        "cids": [o["id"] for o in ds.organizations],
        "csids": [o["company_sso_id"] for o in ds.organizations],
    }
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY {order}), ''))"
            f" FROM {table} t WHERE {where}",
            params,
        )
        return cur.fetchone()


def _pg_state(connect, ds) -> dict:
    """Per CRM table and sso_users (identity database): the dataset's rows' count and hash."""
    crm = connect()
    state = {table: _table_state(crm, ds, table) for table in TABLES}
    identity = connect(os.environ["NOTES_PIPELINE_IDENTITY_DSN"])
    state["sso_users"] = _table_state(identity, ds, "sso_users")
    return state


def _mongo_state(db, ds) -> list:
    return list(
        db.contacts.find({"company_sso_id": {"$in": ds.company_sso_ids()}}, sort=[("_id", 1)])
    )


def _s3_state(s3, bucket) -> dict:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="orgs/")
    return {o["Key"]: o["ETag"] for p in pages for o in p.get("Contents", [])}


@pytest.mark.stack
def test_seed_writes_exactly_the_dataset(seeded, stage1, crm_admin_conn, mongo_db, s3_client):
    state = _pg_state(crm_admin_conn, stage1)
    conn = crm_admin_conn()
    for table in TABLES:
        assert state[table][0] == len(stage1.table(table)), table
    assert state["sso_users"][0] == len(stage1.sso_users)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT organization_id, count(*) FROM crm_notes"
            " WHERE organization_id IN (1001, 1002) GROUP BY 1 ORDER BY 1"
        )
        assert cur.fetchall() == [(1001, 100), (1002, 5000)]
        note = next(n for n in stage1.crm_notes if n["created_at"] and n["created_at"].microsecond)
        cur.execute(
            "SELECT created_at, updated_at, note FROM crm_notes WHERE id = %s", (note["id"],)
        )
        assert cur.fetchone() == (note["created_at"], note["updated_at"], note["note"])
        for value in ("", None):
            cur.execute(
                "SELECT count(*) FROM crm_notes WHERE organization_id IN (1001, 1002)"
                " AND note IS NOT DISTINCT FROM %s",
                (value,),
            )
            assert cur.fetchone()[0] == sum(
                n["note"] == value if value is not None else n["note"] is None
                for n in stage1.crm_notes
            )
        cur.execute(
            "SELECT count(*) FROM crm_notes"
            " WHERE organization_id IN (1001, 1002) AND created_at IS NULL"
        )
        assert cur.fetchone()[0] == sum(n["created_at"] is None for n in stage1.crm_notes)
    assert mongo_db.contacts.count_documents(
        {"company_sso_id": {"$in": stage1.company_sso_ids()}}
    ) == len(stage1.contacts)
    keys = [dict(ix["key"]) for ix in mongo_db.contacts.list_indexes()]
    assert {"company_sso_id": 1, "crm_data.id": 1} in keys
    bucket = os.environ["NOTES_PIPELINE_CRM_BUCKET"]
    assert set(_s3_state(s3_client, bucket)) == set(stage1.objects)
    assert seeded["objects"]["uploaded"] + seeded["objects"]["unchanged"] == len(stage1.objects)


@pytest.mark.stack
def test_seeding_twice_leaves_identical_state(seeded, stage1, crm_admin_conn, mongo_db, s3_client):
    from devtools.synthetic.writer import seed

    bucket = os.environ["NOTES_PIPELINE_CRM_BUCKET"]
    before = (
        _pg_state(crm_admin_conn, stage1),
        _mongo_state(mongo_db, stage1),
        _s3_state(s3_client, bucket),
    )
    again = seed(stage1, _targets(mongo_db))
    after = (
        _pg_state(crm_admin_conn, stage1),
        _mongo_state(mongo_db, stage1),
        _s3_state(s3_client, bucket),
    )
    assert after == before
    assert again["objects"]["uploaded"] == 0 and again["objects"]["deleted"] == 0


@pytest.mark.stack
def test_attachments_download_by_plain_http_get(seeded, stage1, crm_admin_conn):
    wanted = {}
    for row in stage1.assets + stage1.crm_note_attachments:
        wanted.setdefault(row["content_type"], row)
    conn = crm_admin_conn()
    with conn.cursor() as cur:
        for content_type, row in wanted.items():
            table = "assets" if row in stage1.assets else "crm_note_attachments"
            cur.execute(f"SELECT file_url, file_size FROM {table} WHERE id = %s", (row["id"],))
            url, size = cur.fetchone()
            assert url.startswith(os.environ["NOTES_PIPELINE_CRM_ATTACHMENT_BASE_URL"])
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
            expected = stage1.objects[row["key"]].data
            assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest(), content_type
            assert size == len(body)


@pytest.mark.stack
def test_seed_keeps_rows_of_non_synthetic_orgs(seeded, stage1, crm_admin_conn, mongo_db):
    from devtools.synthetic.writer import seed

    conn = crm_admin_conn()
    cid = 9_999_901
    with conn.cursor() as cur:
        cur.execute("DELETE FROM organizations WHERE id = %s", (cid,))
        cur.execute("INSERT INTO organizations VALUES (%s, 'Keep me', %s)", (cid, f"keep-{cid}"))
    try:
        seed(stage1, _targets(mongo_db), attachments=False)
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM organizations WHERE id = %s", (cid,))
            assert cur.fetchone() == ("Keep me",)
    finally:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM organizations WHERE id = %s", (cid,))
