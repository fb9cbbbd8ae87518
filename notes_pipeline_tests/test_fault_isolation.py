"""Issue #8 fault isolation on the local stack: one poisoned note or attachment fails alone.

Each test runs a CID whose other notes all migrate; a fault is injected at one stage
(extraction row, each transform rule, attachment download/upload, Mongo write). The CID
completes, exactly the poisoned note or attachment fails with its reason code and error-log
row, and the counts add up.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bson.errors import InvalidDocument
from crm_fixtures import PNG, FixtureNote, FixtureOrg, install_fresh
from pipeline_harness import metadata, run_cid, stack_resources
from test_pipeline_rules import RELAXED, assert_counts_add_up, error_log_rows

from notes_pipeline.contact_notes.reason_codes import NoteCode
from notes_pipeline.contact_notes.rules import plan as notes_module
from notes_pipeline.core.crm_records import CrmNote
from notes_pipeline.core.resources import crm as crm_module
from notes_pipeline.core.resources.attachment_download import GuardedDownloader
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.resources.storage import AttachmentStorage
from notes_pipeline.core.vocabulary import AttachmentCode, Outcome

pytestmark = pytest.mark.stack

CLEAN = 5
POISON_MARK = "poison-marker"
POISON_CREATED = datetime(2021, 6, 6, 6, 6, 6, tzinfo=UTC)  # unique: identifies the note


def poisoned_org(cid: int) -> FixtureOrg:
    """CLEAN clean notes with one image each, and note `cid*1000+99` marked as the poison."""
    base = cid * 1000
    notes = [
        FixtureNote(base + i, person_id=1, images=[(base + i, f"p{i}.png", PNG, "image/png")])
        for i in range(1, CLEAN + 1)
    ]
    notes.append(
        FixtureNote(
            base + 99,
            person_id=1,
            html=f"<p>{POISON_MARK}</p>",
            created_at=POISON_CREATED,
            images=[(base + 99, f"{POISON_MARK}.png", PNG, "image/png")],
        )
    )
    return FixtureOrg(cid=cid, notes=notes, mapped_person_ids={1})


def _is_poison(value: object, poison_id: int) -> bool:
    if isinstance(value, CrmNote):
        return value.id == poison_id
    if isinstance(value, str):
        return POISON_MARK in value or value == str(poison_id) or "2021-06-06 06:06:06" in value
    return False


def poisoned(original, poison_id: int):
    """`original`, raising RuntimeError when any argument identifies the poisoned note."""

    def wrapper(*args, **kwargs):
        if any(_is_poison(v, poison_id) for v in (*args, *kwargs.values())):
            raise RuntimeError(f"injected fault: {POISON_MARK}")
        return original(*args, **kwargs)

    return wrapper


def run(org: FixtureOrg, **resource_overrides):
    resources = stack_resources(**RELAXED)
    resources.update(resource_overrides)
    return run_cid(str(org.cid), resources)


def assert_only_poison_failed(result, org: FixtureOrg, reason_code: str) -> None:
    poison_id = str(org.cid * 1000 + 99)
    loaded = assert_counts_add_up(result)
    assert (loaded["migrated"], loaded["failed"], loaded["not_attempted"]) == (CLEAN, 1, 0)
    assert loaded["failed_by_reason"] == {reason_code: 1}
    rows = error_log_rows(result)
    assert [(r["legacy_crm_note_id"], r["reason_code"]) for r in rows] == [(poison_id, reason_code)]
    assert POISON_MARK not in str(rows)  # exception class only, never content
    assert rows[0]["details"] == "exception=RuntimeError"
    report = metadata(result, "validation_report")
    assert report["outcomes"]["migrated"] == CLEAN


def test_extraction_row_fault_fails_that_note_alone(monkeypatch, db):
    org = install_fresh(poisoned_org(990601), db)
    poison_id = org.cid * 1000 + 99
    original = crm_module._note_from_row

    def failing_for_poison(row, *args):
        if row["id"] == poison_id:
            raise RuntimeError(f"injected fault: {POISON_MARK}")
        return original(row, *args)

    monkeypatch.setattr(crm_module, "_note_from_row", failing_for_poison)
    assert_only_poison_failed(run(org), org, NoteCode.NOTE_EXTRACT_ERROR)


@pytest.mark.parametrize(
    "rule",
    ["scope_reason", "resolve_owner", "normalize_note_html", "to_utc", "plan_attachments"],
)
def test_a_raising_rule_fails_that_note_alone(monkeypatch, db, rule):
    org = install_fresh(poisoned_org(990602), db)
    poison_id = org.cid * 1000 + 99
    monkeypatch.setattr(notes_module, rule, poisoned(getattr(notes_module, rule), poison_id))
    result = run(org)
    assert_only_poison_failed(result, org, NoteCode.NOTE_TRANSFORM_ERROR)
    plans = result.output_for_node("normalized_notes").plans
    assert [p.reason_code for p in plans if p.outcome == Outcome.FAILED] == [
        NoteCode.NOTE_TRANSFORM_ERROR
    ]


def _attachment_failures(result) -> dict[str, str]:
    load = result.output_for_node("cdp_notes_loaded")
    return {f.asset_id: f.reason_code for f in load.attachment_failures}


def test_download_fault_drops_that_attachment_alone(monkeypatch, db):
    org = install_fresh(poisoned_org(990603), db)
    monkeypatch.setattr(GuardedDownloader, "download", poisoned(GuardedDownloader.download, -1))
    result = run(org)
    loaded = assert_counts_add_up(result)
    assert (loaded["migrated"], loaded["failed"]) == (CLEAN + 1, 0)
    poison_asset = f"a{org.cid * 1000 + 99}"
    assert _attachment_failures(result) == {poison_asset: AttachmentCode.ATTACHMENT_COPY_ERROR}
    rows = [
        r
        for r in error_log_rows(result)
        if r["reason_code"] == AttachmentCode.ATTACHMENT_COPY_ERROR
    ]
    assert len(rows) == 1 and poison_asset in rows[0]["details"]
    assert loaded["attachments_copied"] == CLEAN
    docs = list(db.contact_notes.find({"company_sso_id": org.company_sso_id}))
    held = sorted((d.get("attachments", []) for d in docs), key=lambda a: a[0].get("url") or "")
    assert [a[0].get("legacy_crm_asset_id") for a in held] == [poison_asset] + [None] * CLEAN
    assert [a[0]["url"] is None for a in held] == [True] + [False] * CLEAN  # a placeholder


class _PoisonedUploadStorage(AttachmentStorage):
    def put(self, key, data, content_type):
        if POISON_MARK in key:
            raise RuntimeError("injected upload fault")
        super().put(key, data, content_type)


def test_upload_fault_drops_that_attachment_alone(db):
    org = install_fresh(poisoned_org(990604), db)
    base = stack_resources()["attachment_storage"]
    storage = _PoisonedUploadStorage(bucket=base.bucket, endpoint_url=base.endpoint_url)
    result = run(org, attachment_storage=storage)
    loaded = assert_counts_add_up(result)
    assert (loaded["migrated"], loaded["failed"]) == (CLEAN + 1, 0)
    poison_asset = f"a{org.cid * 1000 + 99}"
    assert _attachment_failures(result) == {poison_asset: AttachmentCode.ATTACHMENT_UPLOAD_FAILED}
    assert loaded["attachments_copied"] == CLEAN


class _PoisonedWriteMongo(CdpMongo):
    """A client-side error (not a PyMongoError) whenever the poisoned note is in the call."""

    def upsert_notes(self, company_sso_id, documents, **kwargs):
        if any(POISON_MARK in (d.get("note") or "") for d in documents):
            raise InvalidDocument("injected encoding fault")
        return super().upsert_notes(company_sso_id, documents, **kwargs)


def test_mongo_write_fault_fails_that_note_alone(db):
    org = install_fresh(poisoned_org(990605), db)
    base = stack_resources()["cdp_mongo"]
    mongo = _PoisonedWriteMongo(uri=base.uri, database=base.database)
    result = run(org, cdp_mongo=mongo)
    loaded = assert_counts_add_up(result)
    assert (loaded["migrated"], loaded["failed"]) == (CLEAN, 1)
    assert loaded["failed_by_reason"] == {NoteCode.BATCH_INSERT_FAILED: 1}
    rows = error_log_rows(result)
    poison_id = str(org.cid * 1000 + 99)
    assert [(r["legacy_crm_note_id"], r["reason_code"], r["details"]) for r in rows] == [
        (poison_id, NoteCode.BATCH_INSERT_FAILED, "InvalidDocument")
    ]
    assert db.contact_notes.count_documents({"company_sso_id": org.company_sso_id}) == CLEAN


EDGE_TIMESTAMPS = {
    1: ("infinity", None),
    2: ("-infinity", None),
    3: ("0044-03-15 00:00:00+00 BC", None),
    4: ("10000-01-01 00:00:00+00", None),
    5: ("2022-03-04 10:00:00+07", "infinity"),
    6: ("1960-05-05 00:00:00+00", None),  # before the plausibility window
}


def test_postgres_timestamp_edge_values_fail_alone(db):
    """psycopg2 cannot build datetimes for these (or builds year 9999/1): read as text."""
    cid = 990606
    base = cid * 1000
    notes = [FixtureNote(base + 50, person_id=1), FixtureNote(base + 51, person_id=1)]
    for offset, (created, updated) in EDGE_TIMESTAMPS.items():
        note = FixtureNote(base + offset, person_id=1, created_at=created)
        if updated is not None:
            note.updated_at = updated
        notes.append(note)
    org = install_fresh(FixtureOrg(cid=cid, notes=notes, mapped_person_ids={1}), db)
    result = run(org)
    loaded = assert_counts_add_up(result)
    assert (loaded["migrated"], loaded["failed"]) == (2, len(EDGE_TIMESTAMPS))
    assert loaded["failed_by_reason"] == {NoteCode.INVALID_TIMESTAMP: len(EDGE_TIMESTAMPS)}
    logged = {r["legacy_crm_note_id"]: r["reason_code"] for r in error_log_rows(result)}
    assert logged == {str(base + o): NoteCode.INVALID_TIMESTAMP for o in EDGE_TIMESTAMPS}


def test_zero_and_negative_note_ids_are_read_like_any_other(db):
    """Keyset pagination starts below every bigint, not at 0."""
    cid = 990607
    org = install_fresh(
        FixtureOrg(
            cid=cid,
            notes=[
                FixtureNote(-7, person_id=1),
                FixtureNote(0, person_id=1),
                FixtureNote(5, person_id=1),
            ],
            mapped_person_ids={1},
        ),
        db,
    )
    result = run(org)
    loaded = assert_counts_add_up(result)
    assert (loaded["source_total"], loaded["migrated"]) == (3, 3)
    plans = result.output_for_node("normalized_notes").plans
    assert sorted(p.legacy_crm_note_id for p in plans) == ["-7", "0", "5"]
