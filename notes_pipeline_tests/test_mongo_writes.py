"""``upsert_on_insert`` on the configured server: outcomes per row from the reply, reads only
where the reply is incomplete (FerretDB when a row fails)."""

from __future__ import annotations

import uuid

import pytest
from pymongo.collection import Collection

from notes_pipeline.core.resources.mongo_indexes import ensure_contact_notes_index
from notes_pipeline.core.resources.mongo_writes import upsert_on_insert

SCOPE = {"company_sso_id": "co-1"}


@pytest.fixture
def coll(mongo_db) -> Collection:
    name = f"writes_{uuid.uuid4().hex[:8]}"
    collection = mongo_db[name]
    ensure_contact_notes_index(collection)
    yield collection
    mongo_db.drop_collection(name)


def _doc(key: str, **extra) -> dict:
    return {"company_sso_id": "co-1", "legacy_crm_note_id": key, "content": "x", **extra}


def _write(coll, docs, max_ops=40):
    return upsert_on_insert(coll, SCOPE, "legacy_crm_note_id", docs, max_ops)


def test_new_and_existing_rows_from_the_reply_alone(coll):
    first = _write(coll, [_doc("a"), _doc("b")])
    assert (first.upserted, first.matched, first.errors) == ({0, 1}, set(), {})
    again = _write(coll, [_doc("b"), _doc("c"), _doc("a")])
    assert (again.upserted, again.matched, again.errors) == ({1}, {0, 2}, {})
    assert again.resolved_by_reads == 0  # no read on a complete reply
    assert sorted(d["legacy_crm_note_id"] for d in coll.find()) == ["a", "b", "c"]


def test_a_failing_row_fails_alone_and_the_others_are_told_apart(coll):
    _write(coll, [_doc("old")])
    batch = [_doc("new1"), _doc("old"), {**_doc("bad"), "$bad": 1}, _doc("new2")]
    result = _write(coll, batch)
    assert 2 in result.errors
    assert 1 in result.matched  # existed before: never counted as inserted
    assert 0 in result.upserted
    # new2 is either written (MongoDB) or reported failed for a retry (FerretDB stops early)
    assert (3 in result.upserted) != (3 in result.errors)
    stored = {d["legacy_crm_note_id"] for d in coll.find()}
    assert stored == {"old", "new1"} | ({"new2"} if 3 in result.upserted else set())


def test_split_into_calls_of_max_ops(coll):
    result = _write(coll, [_doc(str(i)) for i in range(7)], max_ops=3)
    assert result.upserted == set(range(7))
    assert coll.count_documents({}) == 7


def test_rows_outside_the_scope_are_refused(coll):
    with pytest.raises(ValueError):
        _write(coll, [{**_doc("a"), "company_sso_id": "co-2"}])
    assert coll.count_documents({}) == 0


def test_two_writers_of_one_key_insert_once(coll):
    one = _write(coll, [_doc("k", content="first")])
    two = _write(coll, [_doc("k", content="second")])
    assert one.upserted == {0} and two.matched == {0}
    assert [d["content"] for d in coll.find()] == ["first"]


def test_calls_in_parallel_give_every_row_its_own_outcome(coll):
    """Split into calls of 3, four at a time: existing, new and failing rows land in any call,
    and each row's outcome is still its own (indexes into the whole batch)."""
    _write(coll, [_doc("1"), _doc("8")])
    batch = [_doc(str(i)) for i in range(12)]
    batch[5] = {**_doc("5"), "$bad": 1}
    result = upsert_on_insert(coll, SCOPE, "legacy_crm_note_id", batch, 3, concurrency=4)
    assert result.matched == {1, 8}
    assert 5 in result.errors
    lost_to_the_failure = set(result.errors) - {5}  # FerretDB stops its call at the bad row
    assert lost_to_the_failure <= {3, 4}
    assert result.upserted == set(range(12)) - {1, 8, 5} - lost_to_the_failure
    stored = sorted(int(d["legacy_crm_note_id"]) for d in coll.find())
    assert stored == sorted({1, 8} | result.upserted)
