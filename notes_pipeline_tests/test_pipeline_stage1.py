"""stage1 CIDs end to end on the local stack, verified against the CRM itself."""

import csv
import io
import os
import re
import subprocess
import sys

import boto3
import psycopg2
import psycopg2.extras
import pytest
from pipeline_harness import cdp_db, check_results, metadata, run_cid, stack_resources

from notes_pipeline.contact_notes.reason_codes import LEGACY_OWNER_FALLBACK_LABEL
from notes_pipeline.core.vocabulary import MonitorState

SCHEMES = re.compile(r'href="(?!https?:|mailto:)')


@pytest.fixture(scope="module")
def stage1():
    subprocess.run(
        [sys.executable, "-m", "devtools.synthetic", "seed", "--profile", "stage1"],
        check=True,
        capture_output=True,
    )
    return {"small": "1001", "large": "1002"}


def crm_rows(sql: str, *args) -> list[dict]:
    with psycopg2.connect(os.environ["NOTES_PIPELINE_CRM_ADMIN_DSN"]) as conn:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, args)
            return cur.fetchall()


def sso_by_email(company_sso_id: str) -> dict[str, str]:
    with psycopg2.connect(os.environ["NOTES_PIPELINE_IDENTITY_DSN"]) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT lower(email), sso_id FROM sso_users WHERE company_sso_id = %s",
            (company_sso_id,),
        )
        return dict(cur.fetchall())


def test_small_stage1_cid_lands_completely_and_correctly(stage1):
    cid = stage1["small"]
    org = crm_rows("SELECT company_sso_id FROM organizations WHERE id = %s", int(cid))[0]
    company = org["company_sso_id"]
    db = cdp_db()
    db.contact_notes.delete_many({"company_sso_id": company})
    result = run_cid(cid, stack_resources())
    failed = {
        n: {k: v.value for k, v in c.metadata.items()}
        for n, c in check_results(result).items()
        if not c.passed
    }
    assert not failed
    report = result.output_for_node("validation_report")
    assert (report.status, report.match_pct) == (MonitorState.COMPLETED_SUCCESS, 100.0)
    error_log = boto3.client(
        "s3", endpoint_url=os.environ["NOTES_PIPELINE_S3_ENDPOINT_URL"]
    ).get_object(Bucket=os.environ["NOTES_PIPELINE_CDP_BUCKET"], Key=report.error_log_key)
    rows = list(csv.reader(io.StringIO(error_log["Body"].read().decode())))
    assert rows[0] == ["legacy_crm_note_id", "reason_code", "details"]
    assert len(rows) - 1 == report.error_rows

    notes = crm_rows(
        "SELECT n.*, u.full_name, u.email FROM crm_notes n LEFT JOIN users u ON u.id = n.creator_id"
        " WHERE n.organization_id = %s AND n.crm_person_id IS NOT NULL"
        " AND n.crm_note_type_id IN (1, 6)",
        int(cid),
    )
    contacts = {
        c["crm_data"]["id"]: c["_id"] for c in db.contacts.find({"company_sso_id": company})
    }
    stored = {
        d["legacy_crm_note_id"]: d for d in db.contact_notes.find({"company_sso_id": company})
    }
    emails = sso_by_email(company)
    assert len(stored) == len(notes) > 0
    for note in notes:
        doc = stored[str(note["id"])]
        assert doc["contact_id"] == contacts[str(note["crm_person_id"])]
        sso = emails.get((note["email"] or "").lower())
        if sso:
            assert doc["owner_id"] == sso and "legacy_owner_label" not in doc
        else:
            assert doc.get("owner_id") is None
            assert doc["legacy_owner_label"] == (note["full_name"] or LEGACY_OWNER_FALLBACK_LABEL)
        html = doc["note"]
        assert "style=" not in html and "<script" not in html.lower()
        assert not re.search(r"\son\w+=", html) and "data-user-id" not in html
        assert not SCHEMES.search(html)
        if "<p" not in (note["note"] or ""):
            assert not html.startswith("<p>")
        if "data-user-id" in (note["note"] or "") or "edit_user" in (note["note"] or ""):
            assert "@" in html
        expected_created = (
            note["created_at"]
            .astimezone(tz=None)
            .astimezone(__import__("datetime").timezone.utc)
            .replace(tzinfo=None)
        )
        assert abs((doc["created_at"] - expected_created).total_seconds()) < 0.001
        voice_notes = [a for a in doc.get("attachments", []) if a["type"] == "voice_note"]
        assert len(voice_notes) <= 1
        for attachment in doc.get("attachments", []):
            assert attachment["type"] in {"image", "doc", "pdf", "video", "voice_note", "xlsx"}
            assert attachment["url"].startswith(
                f"{os.environ['NOTES_PIPELINE_CDP_PROXY_BASE_URL']}/{company}/{note['id']}/"
            )
    s3 = boto3.client("s3", endpoint_url=os.environ["NOTES_PIPELINE_S3_ENDPOINT_URL"])
    listed = s3.list_objects_v2(
        Bucket=os.environ["NOTES_PIPELINE_CDP_BUCKET"], Prefix=f"{company}/"
    )
    keys = {o["Key"] for o in listed.get("Contents", [])}
    urls = {
        a["url"].split("/attachments/", 1)[1]
        for d in stored.values()
        for a in d.get("attachments", [])
    }
    assert urls and urls <= keys


def test_large_stage1_cid_accounts_for_every_note(stage1):
    cid = stage1["large"]
    company = crm_rows("SELECT company_sso_id FROM organizations WHERE id = %s", int(cid))[0][
        "company_sso_id"
    ]
    cdp_db().contact_notes.delete_many({"company_sso_id": company})
    result = run_cid(cid, stack_resources())
    loaded = metadata(result, "cdp_notes_loaded")
    total = crm_rows("SELECT count(*) AS n FROM crm_notes WHERE organization_id = %s", int(cid))
    assert loaded["source_total"] == total[0]["n"] == 5000
    assert (
        loaded["migrated"] + loaded["skipped"] + loaded["failed"] + loaded["out_of_scope"]
        == loaded["source_total"]
    )
    report = result.output_for_node("validation_report")
    assert report.status == MonitorState.COMPLETED_SUCCESS and report.match_pct >= 99
    assert not report.duplicate_legacy_ids and not report.fidelity_mismatches
