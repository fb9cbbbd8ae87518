"""Issue #12 on the local stack: attachment placeholders repaired by a re-run after an S3
outage (item 1), and CRM-side drift told apart from write-path mismatches (item 2).

The outage is real: the CDP bucket's S3 endpoint refuses connections for re-hosted
attachments (a closed 127.0.0.1 port; the error log still reaches the stack's S3 so the
report can be read), then comes back for the re-run.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

import boto3
import psycopg2
import pytest
from botocore.config import Config
from bson import BSON
from crm_fixtures import PDF, PNG, FixtureNote, FixtureOrg, install_fresh
from pipeline_harness import check_results, metadata, run_cid, stack_resources
from test_pipeline_rules import assert_counts_add_up, error_log_rows

from notes_pipeline.contact_notes.reason_codes import FidelityCode
from notes_pipeline.core.resources.storage import AttachmentStorage
from notes_pipeline.core.vocabulary import AttachmentCode, MonitorState

pytestmark = pytest.mark.stack

REPORTS = "_migration_reports/"


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OutageStorage(AttachmentStorage):
    """The CDP bucket during an S3 outage: re-hosted attachments go to an endpoint that
    refuses connections; error logs still land (so the test can read the report)."""

    down_endpoint_url: str

    def put(self, key, data, content_type):
        if key.startswith(REPORTS):
            return super().put(key, data, content_type)
        down = boto3.client(
            "s3",
            endpoint_url=self.down_endpoint_url,
            region_name=self.region_name,
            config=Config(retries={"max_attempts": 1}, connect_timeout=2),
        )
        down.put_object(Bucket=self.bucket, Key=key, Body=data)


def outage_storage() -> OutageStorage:
    up = stack_resources()["attachment_storage"]
    return OutageStorage(
        bucket=up.bucket,
        endpoint_url=up.endpoint_url,
        down_endpoint_url=f"http://127.0.0.1:{closed_port()}",
    )


def attachment_org(cid: int) -> FixtureOrg:
    """Note 1: an image and a PDF; note 2: an image; note 3: no attachment."""
    base = cid * 1000
    return FixtureOrg(
        cid,
        [
            FixtureNote(
                base + 1,
                person_id=1,
                images=[(base + 1, "photo.png", PNG, "image/png")],
                documents=[(base + 1, "quote.pdf", PDF, "application/pdf")],
            ),
            FixtureNote(base + 2, person_id=1, images=[(base + 2, "map.png", PNG, "image/png")]),
            FixtureNote(base + 3, person_id=1),
        ],
        {1},
    )


def stored(db, org: FixtureOrg) -> dict[str, dict]:
    docs = db.contact_notes.find({"company_sso_id": org.company_sso_id})
    return {d["legacy_crm_note_id"]: d for d in docs}


def rest(doc: dict) -> bytes:
    """The document without its attachments, as BSON bytes (field order included)."""
    return BSON.encode({k: v for k, v in doc.items() if k != "attachments"})


def test_s3_outage_placeholders_are_repaired_by_one_rerun_and_only_once(db):
    org = install_fresh(attachment_org(990851), db)
    cid, base = str(org.cid), org.cid * 1000
    first = run_cid(cid, stack_resources(storage=outage_storage()))
    loaded = assert_counts_add_up(first)
    assert (loaded["migrated"], loaded["attachments_copied"], loaded["attachments_failed"]) == (
        3,
        0,
        3,
    )
    assert loaded["attachments_failed_by_reason"] == {AttachmentCode.ATTACHMENT_UPLOAD_FAILED: 3}
    report = metadata(first, "validation_report")
    # attachments never decide the state (SPEC "Validation", PRD S02 ERR-2): success, 0 % linked
    assert report["status"] == MonitorState.COMPLETED_SUCCESS
    assert (report["attachments_unavailable"], report["attachment_success_pct"]) == (3, 0.0)
    before = stored(db, org)
    assert [
        (a["type"], a["file_name"], a["url"], a["unavailable"], a["legacy_crm_asset_id"])
        for a in before[str(base + 1)]["attachments"]
    ] == [
        ("image", "photo.png", None, True, f"a{base + 1}"),
        ("pdf", "quote.pdf", None, True, f"d{base + 1}"),
    ]
    assert not before[str(base + 3)].get("attachments")

    second = run_cid(cid, stack_resources(), force_rerun=True)  # S3 back
    loaded = assert_counts_add_up(second)
    assert (loaded["migrated"], loaded["skipped"], loaded["attachments_repaired"]) == (0, 3, 3)
    report = metadata(second, "validation_report")
    assert (report["attachments_repaired"], report["attachments_unavailable"]) == (3, 0)
    assert (report["status"], report["mismatched"], report["drift"]) == (
        MonitorState.COMPLETED_SUCCESS,
        0,
        0,
    )
    after = stored(db, org)
    proxy = f"{os.environ['NOTES_PIPELINE_CDP_PROXY_BASE_URL']}/{org.company_sso_id}"
    assert [(a["type"], a["url"]) for a in after[str(base + 1)]["attachments"]] == [
        ("image", f"{proxy}/{base + 1}/a{base + 1}-photo.png"),
        ("pdf", f"{proxy}/{base + 1}/d{base + 1}-quote.pdf"),
    ]  # plan order, each exactly once, no placeholder left
    assert [a["url"] for a in after[str(base + 2)]["attachments"]] == [
        f"{proxy}/{base + 2}/a{base + 2}-map.png"
    ]
    assert all("unavailable" not in a for d in after.values() for a in d.get("attachments", []))
    for key, doc in after.items():
        assert rest(doc) == rest(before[key]), key  # otherwise byte-identical
    s3 = boto3.client("s3", endpoint_url=os.environ["NOTES_PIPELINE_S3_ENDPOINT_URL"])
    bucket = os.environ["NOTES_PIPELINE_CDP_BUCKET"]
    for doc in after.values():
        for a in doc.get("attachments", []):
            key = a["url"].removeprefix(f"{os.environ['NOTES_PIPELINE_CDP_PROXY_BASE_URL']}/")
            assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == a["file_size_in_byte"]

    third = run_cid(cid, stack_resources(), force_rerun=True)
    assert metadata(third, "cdp_notes_loaded")["attachments_repaired"] == 0
    assert stored(db, org) == after


def test_crm_edit_is_drift_and_a_corrupted_document_is_a_mismatch(db):
    org = install_fresh(attachment_org(990852), db)
    cid, base = str(org.cid), org.cid * 1000
    first = run_cid(cid, stack_resources())
    assert metadata(first, "validation_report")["status"] == MonitorState.COMPLETED_SUCCESS

    secret = "Secret renegotiated terms"
    with psycopg2.connect(os.environ["NOTES_PIPELINE_CRM_ADMIN_DSN"]) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE crm_notes SET note = %s, updated_at = %s WHERE id = %s",
            (f"<p>{secret}</p>", datetime(2024, 2, 2, tzinfo=UTC), base + 2),
        )
    drifted = run_cid(cid, stack_resources(), force_rerun=True)
    report = metadata(drifted, "validation_report")
    assert (report["drift"], report["drift_ids"], report["mismatched"]) == (1, [str(base + 2)], 0)
    assert report["status"] == MonitorState.COMPLETED_SUCCESS  # Ops decide; never overwritten
    checks = check_results(drifted)
    assert not checks["source_drift"].passed and checks["source_drift"].severity.value == "WARN"
    assert checks["fidelity"].passed
    rows = [r for r in error_log_rows(drifted) if r["reason_code"] in set(FidelityCode)]
    assert rows == [
        {
            "legacy_crm_note_id": str(base + 2),
            "reason_code": FidelityCode.SOURCE_DRIFT,
            "details": "fields=updated_at,note",
        }
    ]
    assert secret not in str(error_log_rows(drifted)) and secret not in str(report)
    assert secret not in db.contact_notes.find_one({"legacy_crm_note_id": str(base + 2)})["note"]

    with psycopg2.connect(os.environ["NOTES_PIPELINE_CRM_ADMIN_DSN"]) as conn, conn.cursor() as cur:
        note = attachment_org(990852).notes[1]
        cur.execute(
            "UPDATE crm_notes SET note = %s, updated_at = %s WHERE id = %s",
            (note.html, note.updated_at, base + 2),
        )  # the CRM row as it was migrated
    db.contact_notes.update_one(
        {"company_sso_id": org.company_sso_id, "legacy_crm_note_id": str(base + 3)},
        {"$set": {"note": "<p>tampered</p>"}},
    )
    corrupted = run_cid(cid, stack_resources(), force_rerun=True)
    report = metadata(corrupted, "validation_report")
    assert (report["mismatched"], report["mismatched_ids"], report["drift"]) == (
        1,
        [str(base + 3)],
        0,
    )
    assert report["status"] == MonitorState.COMPLETED_WITH_ERRORS
    checks = check_results(corrupted)
    assert not checks["fidelity"].passed and checks["fidelity"].severity.value == "ERROR"
    assert checks["source_drift"].passed
    rows = [r for r in error_log_rows(corrupted) if r["reason_code"] in set(FidelityCode)]
    assert [(r["legacy_crm_note_id"], r["reason_code"], r["details"]) for r in rows] == [
        (str(base + 3), FidelityCode.FIDELITY_MISMATCH, "fields=note")
    ]
