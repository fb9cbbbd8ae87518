"""The pipeline on hand-built CIDs against the local stack: reason codes, isolation, idempotency."""

import csv
import io
import json
import os

import boto3
import pytest
from crm_fixtures import MP3, PNG, FixtureNote, FixtureOrg, install_fresh
from pipeline_harness import (
    BlockingMongo,
    block_writes,
    check_results,
    metadata,
    run_cid,
    stack_resources,
)
from pymongo.errors import AutoReconnect

from notes_pipeline.contact_notes.reason_codes import NoteCode, ScopeCode
from notes_pipeline.core.resources.crm import PostgresCrmSource
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.resources.storage import AttachmentStorage
from notes_pipeline.core.vocabulary import (
    AttachmentCode,
    MonitorState,
    Outcome,
    PlanOutcome,
    RunCode,
)

RELAXED = {"coverage_threshold_pct": 0, "failure_threshold_pct": 100}


def error_log_rows(result) -> list[dict]:
    key = result.output_for_node("validation_report").error_log_key
    s3 = boto3.client("s3", endpoint_url=os.environ["NOTES_PIPELINE_S3_ENDPOINT_URL"])
    body = s3.get_object(Bucket=os.environ["NOTES_PIPELINE_CDP_BUCKET"], Key=key)["Body"].read()
    return list(csv.DictReader(io.StringIO(body.decode())))


def assert_counts_add_up(result) -> dict:
    loaded = metadata(result, "cdp_notes_loaded")
    total = loaded["migrated"] + loaded["skipped"] + loaded["failed"] + loaded["out_of_scope"]
    assert total + loaded["not_attempted"] == loaded["source_total"]
    return loaded


def reason_org(cid: int) -> FixtureOrg:
    """One note per reason code of SPEC.md (plus a clean one)."""
    base = cid * 1000
    meta_url = "http://169.254.169.254/latest/meta-data/x.png"
    return FixtureOrg(
        cid=cid,
        mapped_person_ids={1, 2},
        notes=[
            FixtureNote(base + 1, person_id=1),  # ready
            FixtureNote(base + 2, person_id=9),  # CONTACT_NOT_MAPPED
            FixtureNote(base + 3, person_id=1, html="<div>" + "word " * 2100 + "</div>"),
            FixtureNote(base + 4, person_id=1, html="<p> &nbsp; </p><script>x()</script>"),
            FixtureNote(base + 5, person_id=1, created_at=None),  # INVALID_TIMESTAMP
            FixtureNote(base + 6, deal_id=3),  # NOT_PERSON_NOTE
            FixtureNote(base + 7, person_id=1, note_type_id=2),  # NOTE_TYPE_EXCLUDED
            FixtureNote(
                base + 8,
                person_id=2,
                images=[
                    (base + 1, "ok.png", PNG, "image/png"),
                    (base + 2, "meta.png", meta_url, "image/png"),  # SSRF (metadata)
                    (base + 3, "evil.png", "http://evil.example.com/x.png", "image/png"),
                    (base + 4, "gone.png", None, "image/png"),  # DOWNLOAD_FAILED (404)
                    (base + 5, "big.png", PNG + bytes(5000), "image/png"),  # TOO_LARGE
                ],
                audios=[
                    (base + 6, "v1.mp3", MP3, "audio/mpeg"),
                    (base + 7, "v2.mp3", MP3, "audio/mpeg"),
                ],
                documents=[(base + 1, "fake.pdf", PNG, "application/pdf")],  # TYPE_MISMATCH
            ),
        ],
    )


def test_every_reason_code_is_produced_and_logged(db):
    org = install_fresh(reason_org(990101), db)
    result = run_cid(str(org.cid), stack_resources(attachment_max_bytes=2048, **RELAXED))
    plans = {p.legacy_crm_note_id: p for p in result.output_for_node("normalized_notes").plans}
    base = org.cid * 1000
    expected = {
        base + 1: (PlanOutcome.READY, None),
        base + 2: (Outcome.FAILED, NoteCode.CONTACT_NOT_MAPPED),
        base + 3: (Outcome.FAILED, NoteCode.NOTE_TOO_LONG),
        base + 4: (Outcome.FAILED, NoteCode.NOTE_EMPTY),
        base + 5: (Outcome.FAILED, NoteCode.INVALID_TIMESTAMP),
        base + 6: (Outcome.OUT_OF_SCOPE, ScopeCode.NOT_PERSON_NOTE),
        base + 7: (Outcome.OUT_OF_SCOPE, ScopeCode.NOTE_TYPE_EXCLUDED),
        base + 8: (PlanOutcome.READY, None),
    }
    assert {int(k): (p.outcome, p.reason_code) for k, p in plans.items()} == expected
    failures = {
        f.asset_id: f.reason_code
        for f in result.output_for_node("cdp_notes_loaded").attachment_failures
    }
    assert failures == {
        f"a{base + 2}": AttachmentCode.ATTACHMENT_SSRF_BLOCKED,
        f"a{base + 3}": AttachmentCode.ATTACHMENT_SSRF_BLOCKED,
        f"a{base + 4}": AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED,
        f"a{base + 5}": AttachmentCode.ATTACHMENT_TOO_LARGE,
        f"a{base + 7}": AttachmentCode.ATTACHMENT_EXTRA_VOICE_NOTE,
        f"d{base + 1}": AttachmentCode.ATTACHMENT_TYPE_MISMATCH,
    }
    note = db.contact_notes.find_one(
        {"company_sso_id": org.company_sso_id, "legacy_crm_note_id": str(base + 8)}
    )
    held = note["attachments"]  # still inserted, each failed copy as a placeholder, plan order
    assert [a["type"] for a in held if not a.get("unavailable")] == ["image", "voice_note"]
    assert [(a.get("legacy_crm_asset_id"), a["url"]) for a in held if a.get("unavailable")] == [
        (f"a{base + 2}", None),
        (f"a{base + 3}", None),
        (f"a{base + 4}", None),
        (f"a{base + 5}", None),
        (f"d{base + 1}", None),
    ]  # the extra voice note is dropped by rule 6: no placeholder
    assert [a.get("unavailable", False) for a in held] == [False, *[True] * 4, False, True]
    loaded = assert_counts_add_up(result)
    assert (loaded["migrated"], loaded["failed"], loaded["out_of_scope"]) == (2, 4, 2)
    log = {(row["legacy_crm_note_id"], row["reason_code"]) for row in error_log_rows(result)}
    for code in (
        NoteCode.CONTACT_NOT_MAPPED,
        NoteCode.NOTE_TOO_LONG,
        NoteCode.NOTE_EMPTY,
        NoteCode.INVALID_TIMESTAMP,
        AttachmentCode.ATTACHMENT_SSRF_BLOCKED,
        AttachmentCode.ATTACHMENT_TOO_LARGE,
        AttachmentCode.ATTACHMENT_TYPE_MISMATCH,
        AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED,
        AttachmentCode.ATTACHMENT_EXTRA_VOICE_NOTE,
    ):
        assert any(c == code for _, c in log), code
    assert "word" not in str(error_log_rows(result))  # ids and codes, never content


def test_flag_off_refuses_to_write(db):
    org = install_fresh(FixtureOrg(990102, [FixtureNote(990102001, person_id=1)], {1}), db)
    result = run_cid(str(org.cid), stack_resources(enabled_cids="1,2,3"), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "cdp_notes_loaded"
    assert RunCode.FLAG_DISABLED in failure.event_specific_data.error.message
    assert db.contact_notes.count_documents({"company_sso_id": org.company_sso_id}) == 0


def test_upload_failure_drops_only_the_attachment(db):
    org = install_fresh(
        FixtureOrg(
            990103,
            [FixtureNote(990103001, person_id=1, images=[(990103001, "a.png", PNG, "image/png")])],
            {1},
        ),
        db,
    )
    broken = AttachmentStorage(
        bucket="no-such-bucket", endpoint_url=os.environ["NOTES_PIPELINE_S3_ENDPOINT_URL"]
    )
    import dagster as dg

    from notes_pipeline.contact_notes.definitions import migration_assets

    resources = stack_resources(storage=broken)
    dg.DagsterInstance.get().add_dynamic_partitions("cid", [str(org.cid)])
    result = dg.materialize(
        migration_assets,
        partition_key=str(org.cid),
        resources=resources,
        selection=["crm_notes_raw", "normalized_notes", "cdp_notes_loaded"],
        instance=dg.DagsterInstance.get(),
    )
    load = result.output_for_node("cdp_notes_loaded")
    assert [f.reason_code for f in load.attachment_failures] == [
        AttachmentCode.ATTACHMENT_UPLOAD_FAILED
    ]
    assert load.counts == {Outcome.MIGRATED: 1} and load.unwritten == []
    doc = db.contact_notes.find_one({"company_sso_id": org.company_sso_id})
    assert doc["attachments"] == [
        {
            "type": "image",
            "url": None,
            "file_name": "a.png",
            "file_size_in_byte": None,
            "unavailable": True,
            "legacy_crm_asset_id": "a990103001",
        }
    ]  # PRD S05 ERR-1: "Attachment unavailable", not silently omitted


def test_write_errors_become_batch_insert_failed_after_one_retry(db):
    org = install_fresh(
        FixtureOrg(990104, [FixtureNote(990104000 + i, person_id=1) for i in range(1, 11)], {1}), db
    )
    block_writes(db, org, [990104003])
    try:
        mongo = BlockingMongo(
            uri=os.environ["NOTES_PIPELINE_MONGO_URI"], database=db.name, blocked=["990104003"]
        )
        result = run_cid(str(org.cid), stack_resources(mongo=mongo, **RELAXED))
        load = result.output_for_node("cdp_notes_loaded")
        unwritten = [(o.legacy_crm_note_id, o.outcome, o.reason_code) for o in load.unwritten]
        assert unwritten == [("990104003", Outcome.FAILED, NoteCode.BATCH_INSERT_FAILED)]
        assert load.counts == {Outcome.MIGRATED: 9, Outcome.FAILED: 1}
        assert_counts_add_up(result)
    finally:
        db.contact_notes.delete_many({"company_sso_id": org.company_sso_id})
        db.contact_notes.drop_index("test_blocker")


class FlakyMongo(CdpMongo):
    """Loses the connection on the first bulk write of the run."""

    failures_left: int = 1

    def upsert_notes(self, company_sso_id, documents, **kwargs):
        if self.failures_left:
            object.__setattr__(self, "failures_left", self.failures_left - 1)
            raise AutoReconnect("connection reset")
        return super().upsert_notes(company_sso_id, documents, **kwargs)


def test_transient_write_error_is_retried_once(db):
    org = install_fresh(
        FixtureOrg(990105, [FixtureNote(990105000 + i, person_id=1) for i in range(1, 6)], {1}), db
    )
    mongo = FlakyMongo(uri=os.environ["NOTES_PIPELINE_MONGO_URI"], database=db.name)
    result = run_cid(str(org.cid), stack_resources(mongo=mongo))
    loaded = metadata(result, "cdp_notes_loaded")
    assert (loaded["migrated"], loaded["failed"]) == (5, 0)


def test_rerun_skips_everything_and_changes_nothing(db):
    org = install_fresh(
        FixtureOrg(
            990106,
            [
                FixtureNote(
                    990106000 + i, person_id=1, images=[(990106000 + i, "p.png", PNG, "image/png")]
                )
                for i in range(1, 8)
            ],
            {1},
        ),
        db,
    )
    db.contact_notes.insert_many(
        [
            {
                "company_sso_id": org.company_sso_id,
                "contact_id": "contact-990106-1",
                "note": "native 1",
            },
            {
                "company_sso_id": org.company_sso_id,
                "contact_id": "contact-990106-1",
                "note": "native 2",
            },
        ]
    )
    first = run_cid(str(org.cid), stack_resources())
    before = sorted(db.contact_notes.find({"company_sso_id": org.company_sso_id}), key=str)
    second = run_cid(str(org.cid), stack_resources(), force_rerun=True)  # completed: override
    after = sorted(db.contact_notes.find({"company_sso_id": org.company_sso_id}), key=str)
    assert (
        metadata(first, "cdp_notes_loaded")["migrated"],
        metadata(first, "cdp_notes_loaded")["skipped"],
    ) == (7, 0)
    assert (
        metadata(second, "cdp_notes_loaded")["migrated"],
        metadata(second, "cdp_notes_loaded")["skipped"],
    ) == (0, 7)
    assert before == after and len(after) == 9  # 7 migrated + 2 native notes, untouched
    assert metadata(second, "validation_report")["duplicates"] == 0
    assert metadata(second, "validation_report")["status"] == MonitorState.COMPLETED_SUCCESS


def test_other_companies_are_never_read_or_written(db):
    mine = install_fresh(FixtureOrg(990107, [FixtureNote(990107001, person_id=1)], {1}), db)
    theirs = install_fresh(FixtureOrg(990108, [FixtureNote(990108001, person_id=1)], {1}), db)
    db.contacts.insert_one(
        {"_id": "foreign-contact", "company_sso_id": theirs.company_sso_id, "crm_data": {"id": "2"}}
    )
    db.contact_notes.insert_one(
        {
            "company_sso_id": theirs.company_sso_id,
            "legacy_crm_note_id": "990107001",
            "note": "theirs",
        }
    )
    others = {"company_sso_id": {"$ne": mine.company_sso_id}}
    snapshot = sorted(db.contact_notes.find(others), key=lambda d: str(d["_id"]))
    result = run_cid(str(mine.cid), stack_resources())
    assert metadata(result, "crm_notes_raw")["total"] == 1
    assert sorted(db.contact_notes.find(others), key=lambda d: str(d["_id"])) == snapshot
    doc = db.contact_notes.find_one({"company_sso_id": mine.company_sso_id})
    assert doc["contact_id"] == "contact-990107-1" and doc["legacy_crm_note_id"] == "990107001"
    assert (
        metadata(result, "cdp_notes_loaded")["migrated"] == 1
    )  # same legacy id elsewhere: no clash


class UnavailableCount(PostgresCrmSource):
    def count_in_scope_notes(self, cid, note_type_ids):
        raise ConnectionError("CRM unavailable")


def test_validation_skipped_when_the_source_count_is_unavailable(db):
    org = install_fresh(FixtureOrg(990109, [FixtureNote(990109001, person_id=1)], {1}), db)
    resources = stack_resources()
    resources["crm"] = UnavailableCount(dsn=os.environ["NOTES_PIPELINE_CRM_DSN"])
    result = run_cid(str(org.cid), resources)
    report = result.output_for_node("validation_report")
    assert report.validation_skipped and report.status == MonitorState.COMPLETED_WITH_ERRORS
    assert check_results(result)["match"].passed is False


def test_prd_events_are_structured_and_carry_no_pii(db, caplog):
    org = FixtureOrg(
        990110,
        [
            FixtureNote(
                990110001, person_id=1, creator_id=7, html="Secret deal terms", checkin=True
            ),
            FixtureNote(990110002, person_id=9, html="Other secret"),
        ],
        {1},
        users={7: ("Rahasia Nama", "rahasia@example.test")},
    )
    install_fresh(org, db)
    caplog.set_level("INFO", logger="notes_pipeline.contact_notes.events")
    result = run_cid(str(org.cid), stack_resources(**RELAXED))
    import dagster as dg

    run_logs = [e.user_message for e in dg.DagsterInstance.get().all_logs(result.run_id)]
    note_logs = [
        r.getMessage() for r in caplog.records if r.name == "notes_pipeline.contact_notes.events"
    ]
    events = [json.loads(m) for m in run_logs + note_logs if m.startswith('{"')]
    by_name = {e["event"]: e for e in events}
    assert set(by_name) >= {
        "crm_notes_migration_started",
        "crm_notes_migration_batch_completed",
        "crm_notes_migration_note_failed",
        "crm_notes_migration_owner_not_resolved",
        "crm_notes_migration_checkin_dropped",
        "crm_notes_migration_completed",
    }
    assert by_name["crm_notes_migration_note_failed"]["reason_code"] == NoteCode.CONTACT_NOT_MAPPED
    assert by_name["crm_notes_migration_owner_not_resolved"]["crm_user_id"] == 990110007
    assert set(by_name["crm_notes_migration_completed"]) == {
        "event",
        "job_id",
        "cid",
        "status",
        "notes_migrated",
        "notes_failed",
        "match_pct",
        "duration_seconds",
    }
    everything = "\n".join(run_logs + note_logs)
    for pii in ("Rahasia", "rahasia@example.test", "Secret", "secret"):
        assert pii not in everything


def test_event_lines_refuse_unlisted_properties():
    from notes_pipeline.contact_notes import events

    with pytest.raises(ValueError):
        events.event_line(events.NOTE_FAILED, job_id="j", cid="1", note="<b>text</b>")
