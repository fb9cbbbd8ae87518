"""``upsert_on_insert`` when one bulk call of a batch raises ``ConnectionFailure`` while the
others succeed (``concurrency`` > 1 runs them all): the exception still propagates, and the
callers' retry (``contact_notes.load.upsert_with_retry``, ``activity_logs.load.write_batch``)
must count the rows the other calls inserted as inserted, not as already there. Plain Python:
a fake collection with the real unique key, no services."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from pymongo.errors import ConnectionFailure
from pymongo.results import BulkWriteResult

from notes_pipeline.activity_logs.load import write_batch
from notes_pipeline.activity_logs.records import PlanEntry, PlanOutcome
from notes_pipeline.contact_notes.load import upsert_with_retry
from notes_pipeline.core.resources.mongo_writes import upsert_on_insert

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
            upserted, matched = [], 0
            for i, r in enumerate(requests):
                key = (r._filter["company_sso_id"], r._filter[KEY])
                if key in self.docs:
                    matched += 1
                else:
                    self.docs[key] = r._doc["$setOnInsert"]
                    upserted.append({"index": i, "_id": self.docs[key]["_id"]})
        reply = {"nUpserted": len(upserted), "nMatched": matched, "upserted": upserted,
                 "writeErrors": []}  # fmt: skip
        return BulkWriteResult(reply, True)

    def find_one(self, flt, projection=None):  # pragma: no cover - complete replies only
        raise AssertionError("no read expected")


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
    mongo = SimpleNamespace(
        upsert_notes=lambda company, batch: upsert_on_insert(
            coll, {"company_sso_id": company}, KEY, batch, 3, concurrency
        )
    )
    ctx = SimpleNamespace(mongo=mongo, org=SimpleNamespace(company_sso_id="co-1"))
    result = upsert_with_retry(ctx, docs(9))
    assert (result.upserted, result.matched, result.errors) == (set(range(9)), set(), {})
    assert len(coll.docs) == 9


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_activity_log_retry_reports_no_duplicate_for_rows_this_batch_inserted(concurrency):
    coll = BlipCollection("4")
    batch = [
        PlanEntry(
            crm_audit_id=i, external_id=f"crm_audit:{i}", outcome=PlanOutcome.READY, document=doc
        )  # fmt: skip
        for i, doc in enumerate(docs(9))
    ]
    result = write_batch(
        lambda rows: upsert_on_insert(coll, {"company_sso_id": "co-1"}, KEY, rows, 3, concurrency),
        batch,
    )
    # matched = skipped as duplicate_external_id: none of these existed before the batch
    assert (result.upserted, result.matched, result.errors) == (set(range(9)), set(), {})
