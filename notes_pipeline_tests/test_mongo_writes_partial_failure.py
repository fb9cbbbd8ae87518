"""``upsert_on_insert`` when one bulk call of a batch raises ``ConnectionFailure`` while the
others succeed (``concurrency`` > 1 runs them all): the exception still propagates, and the
callers' retry (``contact_notes.load.upsert_with_retry``, ``activity_logs.load.write_batch``)
must count the rows the other calls inserted as inserted, not as already there. The same when
the failed call's own writes reached the server before the connection dropped: the retry sends
each row with its first ``_id`` and recognises its own insert. Plain Python: a fake collection
with the real unique key, no services."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from bson import ObjectId
from pymongo.errors import ConnectionFailure
from pymongo.results import BulkWriteResult

from notes_pipeline.activity_logs.jobs import LoadCounters, ResumePoint
from notes_pipeline.activity_logs.load import (
    ActivityLoadContext,
    load_activity_logs,
    write_batch,
)
from notes_pipeline.activity_logs.records import PlanEntry, PlanOutcome
from notes_pipeline.contact_notes.load import upsert_with_retry
from notes_pipeline.core.crm_records import Organization
from notes_pipeline.core.resources.mongo_writes import upsert_on_insert, with_ids

KEY = "legacy_crm_note_id"


class BlipCollection:
    """Unique (company_sso_id, KEY); MongoDB's complete replies; the first call holding
    ``blip_key`` raises ``ConnectionFailure`` (nothing of that call written), later ones work."""

    def __init__(self, blip_key: str) -> None:
        self.docs: dict[tuple, dict] = {}
        self.lock = threading.Lock()
        self.blip_key: str | None = blip_key

    def bulk_write(self, requests, ordered=False):
        with self.lock:
            if any(r._filter[KEY] == self.blip_key for r in requests):
                self.blip_key = None
                raise ConnectionFailure("connection reset")
            return BulkWriteResult(self._write(requests), True)

    def _write(self, requests) -> dict:
        """Apply ``requests`` as the unique index would; MongoDB's complete reply."""
        upserted, matched = [], 0
        for i, r in enumerate(requests):
            key = (r._filter["company_sso_id"], r._filter[KEY])
            if key in self.docs:
                matched += 1
            else:
                self.docs[key] = r._doc["$setOnInsert"]
                upserted.append({"index": i, "_id": self.docs[key]["_id"]})
        return {"nUpserted": len(upserted), "nMatched": matched, "upserted": upserted,
                "writeErrors": []}  # fmt: skip

    def find_one(self, flt, projection=None):  # pragma: no cover - complete replies only
        raise AssertionError("no read expected")


class LateDropCollection(BlipCollection):
    """Like ``BlipCollection``, but a call holding ``blip_key`` writes its rows, then raises
    (the connection dropped before the reply), ``drops`` times; reads by ``_id`` or key."""

    def __init__(self, blip_key: str, drops: int = 1) -> None:
        super().__init__(blip_key)
        self.drops = drops

    def bulk_write(self, requests, ordered=False):
        if self.drops and any(r._filter[KEY] == self.blip_key for r in requests):
            self.drops -= 1
            for r in requests:
                self.docs.setdefault(
                    (r._filter["company_sso_id"], r._filter[KEY]), r._doc["$setOnInsert"]
                )
            raise ConnectionFailure("connection reset after the write")
        return BulkWriteResult(self._write(requests), True)

    def find_one(self, flt, projection=None):
        if "_id" in flt:
            return next((d for d in self.docs.values() if d["_id"] == flt["_id"]), None)
        return self.docs.get((flt["company_sso_id"], flt[KEY]))


def docs(n: int) -> list[dict]:
    return [{"company_sso_id": "co-1", KEY: str(i)} for i in range(n)]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_failure_propagates_after_every_call_with_what_the_others_did(concurrency):
    coll = BlipCollection("4")
    with pytest.raises(ConnectionFailure) as raised:
        upsert_on_insert(coll, {"company_sso_id": "co-1"}, KEY, docs(9), 3, concurrency)
    done = raised.value.partial_result
    written = {int(key) for _, key in coll.docs}
    assert written == ({0, 1, 2, 6, 7, 8} if concurrency > 1 else {0, 1, 2})
    assert done.upserted == written
    assert set(done.errors) == set(range(9)) - written
    assert done.matched == set()


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_notes_retry_counts_rows_the_other_calls_inserted_as_inserted(concurrency):
    coll = BlipCollection("4")
    result = upsert_with_retry(notes_ctx(coll, concurrency), docs(9))
    assert (result.upserted, result.matched, result.errors) == (set(range(9)), set(), {})
    assert len(coll.docs) == 9


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_activity_log_retry_reports_no_duplicate_for_rows_this_batch_inserted(concurrency):
    coll = BlipCollection("4")
    result = write_batch(activity_writer(coll, concurrency), with_ids(docs(9)))
    # matched = skipped as duplicate_external_id: none of these existed before the batch
    assert (result.upserted, result.matched, result.errors) == (set(range(9)), set(), {})


def activity_writer(coll, concurrency: int):
    """``CdpMongo.upsert_activity_logs`` bound to co-1, over ``coll``."""

    def write(rows, *, recheck_matched=False):
        return upsert_on_insert(
            coll, {"company_sso_id": "co-1"}, KEY, rows, 3, concurrency,
            recheck_matched=recheck_matched,
        )  # fmt: skip

    return write


def notes_ctx(coll, concurrency: int) -> SimpleNamespace:
    mongo = SimpleNamespace(
        upsert_notes=lambda company, batch, recheck_matched=False: upsert_on_insert(
            coll,
            {"company_sso_id": company},
            KEY,
            batch,
            3,
            concurrency,
            recheck_matched=recheck_matched,
        )  # fmt: skip
    )
    return SimpleNamespace(mongo=mongo, org=SimpleNamespace(company_sso_id="co-1"))


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_notes_retry_counts_rows_its_dropped_call_inserted_as_inserted(concurrency):
    coll = LateDropCollection("4")
    result = upsert_with_retry(notes_ctx(coll, concurrency), docs(9))
    assert (result.upserted, result.matched, result.errors) == (set(range(9)), set(), {})
    assert len(coll.docs) == 9


def test_a_row_that_was_there_before_stays_matched_on_the_retry():
    coll = LateDropCollection("4")
    coll.docs[("co-1", "4")] = {"company_sso_id": "co-1", KEY: "4", "_id": "earlier-run"}
    result = upsert_with_retry(notes_ctx(coll, 1), docs(9))
    assert (result.upserted, result.matched, result.errors) == (set(range(9)) - {4}, {4}, {})


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_activity_log_batch_retry_counts_its_dropped_rows_as_inserted(concurrency):
    coll = LateDropCollection("4")
    result = write_batch(
        lambda rows, recheck_matched=False: upsert_on_insert(
            coll,
            {"company_sso_id": "co-1"},
            KEY,
            rows,
            3,
            concurrency,
            recheck_matched=recheck_matched,
        ),  # fmt: skip
        with_ids(docs(9)),
    )
    assert (result.upserted, result.matched, result.errors) == (set(range(9)), set(), {})


ORG = Organization(cid="1", name="Org", company_sso_id="co-1")


def ready_entries(n: int) -> list[PlanEntry]:
    """``n`` ready plan entries over ``docs(n)``, audit ids from 1."""
    return [
        PlanEntry(
            crm_audit_id=i, external_id=f"crm_audit:{i}", outcome=PlanOutcome.READY, document=doc
        )  # fmt: skip
        for i, doc in enumerate(docs(n), start=1)
    ]


def test_the_end_of_run_queue_retry_counts_its_own_earlier_insert_as_migrated():
    """The call holding key "4" (rows 3-5) drops after writing, on the first attempt and on
    the batch retry (the calls after it are not sent): rows 3-8 are queued (failed), and the
    end-of-run retry finds rows 3-5 stored with their own ``_id``: migrated, not
    ``duplicate_external_id`` skips."""
    coll = LateDropCollection("4", drops=2)
    entries = ready_entries(9)
    ctx = ActivityLoadContext(
        org=ORG,
        write=activity_writer(coll, 1),
        job_id="job-1",
        batch_size=9,
        write_concurrency=1,
        halt_threshold=1.0,
    )
    result = load_activity_logs(ctx, entries)
    assert (result.queued, result.queue_recovered, result.queue_left) == (6, 6, 0)
    c = result.counters
    assert (c.migrated, c.skipped, c.failed) == (9, 0, 0)
    assert result.skipped_by_code.get("duplicate_external_id", 0) == 0


def test_with_ids_keeps_a_documents_own_falsy_id_and_never_touches_the_original():
    """``_id`` 0 or "" is the document's own ``_id`` (valid in MongoDB): kept, as
    ``upsert_on_insert`` keeps it; only a missing or None ``_id`` gets a new ``ObjectId``."""
    originals = [{KEY: "a", "_id": 0}, {KEY: "b", "_id": ""}, {KEY: "c", "_id": None}, {KEY: "d"}]
    copies = with_ids(originals)
    assert [c["_id"] for c in copies[:2]] == [0, ""]
    assert all(isinstance(c["_id"], ObjectId) for c in copies[2:])
    assert originals == [{KEY: "a", "_id": 0}, {KEY: "b", "_id": ""}, {KEY: "c", "_id": None},
                         {KEY: "d"}]  # fmt: skip


def test_a_resumed_job_counts_rows_its_halted_predecessor_wrote_as_migrated():
    """The call holding key "4" (rows 3-5) drops after writing, on the first attempt and on
    the batch retry: the job halts (3 of 6 failed) with rows 3-5 queued, reported
    ``write_failed`` although they are stored, with the ``_id`` they were sent with. The job
    that resumes it re-sends them with those ``_id``s: none of the nine existed before the
    migration, so all nine end migrated."""
    coll = LateDropCollection("4", drops=2)

    entries = ready_entries(9)

    def ctx(resume=None):
        return ActivityLoadContext(
            org=ORG, write=activity_writer(coll, 1), job_id="job-2" if resume else "job-1",
            batch_size=3, write_concurrency=1, halt_threshold=0.1, resume=resume,
        )  # fmt: skip

    halted = load_activity_logs(ctx(), entries)
    assert (halted.status, halted.queue_left, halted.not_attempted) == ("halted", 3, 3)
    assert len(coll.docs) == 6  # rows 3-5 are stored all the same
    c = halted.counters
    retry = frozenset(f.external_id for f in halted.failures)
    carried = LoadCounters(c.migrated, c.skipped, c.failed - len(retry))
    assert all(f.document_id is not None for f in halted.failures)
    sent = {f.external_id: f.document_id for f in halted.failures}
    resume = ResumePoint("job-1", halted.last_audit_id, carried, retry, sent)
    resumed = load_activity_logs(ctx(resume), entries)
    c = resumed.counters
    assert (c.migrated, c.skipped, c.failed) == (9, 0, 0)
