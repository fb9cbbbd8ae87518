"""One test per MongoDB feature the product relies on (docs/MONGODB.md).

Runs against whichever server the stack is configured with: FerretDB 1.x (default local
stack) or real MongoDB (CI's mongo:7 service, or a local mongod).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from bson import BSON, ObjectId
from pymongo import MongoClient, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from notes_pipeline.core.resources.mongo import CONTACT_NOTES, CdpMongo
from notes_pipeline.core.resources.mongo_indexes import (
    CONTACT_NOTES_INDEX_KEYS,
    CONTACT_NOTES_INDEX_NAME,
    CONTACTS_INDEX_KEYS,
    VARIANT_PARTIAL,
    VARIANT_PLAIN,
    drop_contact_notes_index,
    ensure_contact_notes_index,
    ensure_contacts_index,
    is_ferretdb,
    max_bulk_write_ops,
)

pytestmark = pytest.mark.stack

WIB = timezone(timedelta(hours=7))


@pytest.fixture
def coll(mongo_db):
    """A fresh collection per test in the session database."""
    name = f"contact_notes_{uuid.uuid4().hex[:8]}"
    yield mongo_db[name]
    mongo_db.drop_collection(name)


@pytest.fixture(scope="module")
def ferret(mongo_client) -> bool:
    return "ferretdbVersion" in mongo_client.admin.command("buildInfo")


def _indexes(coll) -> dict[str, dict]:
    return {ix["name"]: dict(ix) for ix in coll.list_indexes()}


def _upsert_spec(company: str, legacy_id: str, **doc) -> tuple[dict, dict]:
    """(filter, update) of the product's idempotent insert."""
    full = {"company_sso_id": company, "legacy_crm_note_id": legacy_id, **doc}
    return {"company_sso_id": company, "legacy_crm_note_id": legacy_id}, {"$setOnInsert": full}


def _upsert(company: str, legacy_id: str, **doc) -> UpdateOne:
    flt, update = _upsert_spec(company, legacy_id, **doc)
    return UpdateOne(flt, update, upsert=True)


# (1) ------------------------------------------------------------------------------------
def test_partial_filter_expression_support_is_what_we_expect(coll, ferret):
    """FerretDB 1.x REJECTS partialFilterExpression (it does not silently ignore it);
    MongoDB keeps it on the index."""
    keys = CONTACT_NOTES_INDEX_KEYS
    pfe = {"legacy_crm_note_id": {"$exists": True}}
    if ferret:
        with pytest.raises(OperationFailure) as info:
            coll.create_index(keys, name="probe", unique=True, partialFilterExpression=pfe)
        assert info.value.code == 238, info.value.details  # NotImplemented
        assert "partialFilterExpression" in info.value.details["errmsg"]
        assert "probe" not in _indexes(coll)  # nothing half-created
    else:
        coll.create_index(keys, name="probe", unique=True, partialFilterExpression=pfe)
        assert _indexes(coll)["probe"]["partialFilterExpression"] == pfe


def test_unique_index_native_notes_never_collide(coll, ferret):
    variant = ensure_contact_notes_index(coll)
    assert variant == (VARIANT_PLAIN if ferret else VARIANT_PARTIAL)
    assert is_ferretdb(coll) == ferret

    index = _indexes(coll)[CONTACT_NOTES_INDEX_NAME]
    assert index["unique"] is True
    assert list(index["key"].items()) == [(k, v) for k, v in CONTACT_NOTES_INDEX_KEYS]

    # idempotent: a second call changes nothing
    before = _indexes(coll)
    assert ensure_contact_notes_index(coll) == variant
    assert _indexes(coll) == before

    # two native notes (no legacy_crm_note_id) in one company never collide
    coll.insert_one({"company_sso_id": "co-a", "note": "native 1"})
    coll.insert_one({"company_sso_id": "co-a", "note": "native 2"})
    coll.insert_one({"company_sso_id": "co-a", "note": "native 3"})
    assert coll.count_documents({"company_sso_id": "co-a"}) == 3

    # a duplicate legacy id in one company is rejected ...
    coll.insert_one({"company_sso_id": "co-a", "legacy_crm_note_id": "101"})
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"company_sso_id": "co-a", "legacy_crm_note_id": "101"})
    # ... while the same legacy id in another company is fine
    coll.insert_one({"company_sso_id": "co-b", "legacy_crm_note_id": "101"})
    assert coll.count_documents({"legacy_crm_note_id": "101"}) == 2

    # documented down-step: drop (idempotent), documents untouched; up-step again
    assert drop_contact_notes_index(coll) is True
    assert drop_contact_notes_index(coll) is False
    assert CONTACT_NOTES_INDEX_NAME not in _indexes(coll)
    assert coll.count_documents({}) == 5
    assert ensure_contact_notes_index(coll) == variant


# (2) ------------------------------------------------------------------------------------
def test_bulk_write_set_on_insert_upsert_counts_and_rerun(coll):
    ensure_contact_notes_index(coll)
    created = datetime(2022, 3, 4, 3, 0, tzinfo=UTC)
    first = [_upsert("co-a", str(i), note=f"v1 {i}", created_at=created) for i in range(10)]
    res = coll.bulk_write(first, ordered=False)
    assert (res.upserted_count, res.matched_count, res.modified_count) == (10, 0, 0)
    assert sorted(res.upserted_ids) == list(range(10))
    snapshot = {d["_id"]: d for d in coll.find({"company_sso_id": "co-a"})}

    # re-run with different content: everything matched, nothing modified
    again = [_upsert("co-a", str(i), note=f"v2 {i}", created_at=created) for i in range(10)]
    res = coll.bulk_write(again, ordered=False)
    assert (res.upserted_count, res.matched_count, res.modified_count) == (0, 10, 0)
    assert {d["_id"]: d for d in coll.find({"company_sso_id": "co-a"})} == snapshot

    # mixed batch: 5 existing + 5 new; the same ids in another company are new there
    mixed = [_upsert("co-a", str(i), note="v3") for i in range(5, 15)]
    res = coll.bulk_write(mixed, ordered=False)
    assert (res.upserted_count, res.matched_count) == (5, 5)
    new_keys = [str(i) for i in range(10, 15)]
    new_ids = {d["_id"] for d in coll.find({"legacy_crm_note_id": {"$in": new_keys}})}
    assert set(res.upserted_ids.values()) == new_ids
    res = coll.bulk_write([_upsert("co-b", str(i)) for i in range(3)], ordered=False)
    assert (res.upserted_count, res.matched_count) == (3, 0)
    assert coll.count_documents({"company_sso_id": "co-a"}) == 15


def test_bulk_write_per_row_attribution(coll, ferret):
    """Which op of a batch was upserted: MongoDB reports the op index in ``upserted[].index``;
    FerretDB 1.x reports a running counter (0, 1, 2 ... per upsert), NOT the op index.
    Portable attribution: the caller sets ``_id`` in ``$setOnInsert`` and maps
    ``upserted_ids`` values (the ``_id``s) back to rows."""
    ensure_contact_notes_index(coll)
    coll.bulk_write([_upsert("co-a", str(i)) for i in (1, 3)], ordered=False)
    row_ids = {str(i): ObjectId() for i in range(5)}
    ops = [_upsert("co-a", key, _id=oid) for key, oid in row_ids.items()]
    res = coll.bulk_write(ops, ordered=False)
    assert (res.upserted_count, res.matched_count) == (3, 2)

    # portable: caller-set _id is stored and reported as the upserted _id
    by_id = {oid: key for key, oid in row_ids.items()}
    assert sorted(by_id[oid] for oid in res.upserted_ids.values()) == ["0", "2", "4"]
    assert coll.count_documents({"_id": {"$in": list(row_ids.values())}}) == 3

    # server-specific: what upserted[].index means
    if ferret:
        assert sorted(res.upserted_ids) == [0, 1, 2]  # counter, not op index
    else:
        assert sorted(res.upserted_ids) == [0, 2, 4]  # op index


def test_bulk_write_error_mid_batch(coll, ferret):
    """A failing op inside an unordered batch. MongoDB: BulkWriteError naming the op, every
    other op executed. FerretDB 1.x ignores ``ordered=False`` (its issue #2612): it stops at
    the failing op (earlier ops stay committed, later ones never run) and answers with
    ``writeErrors`` but without ``n``/``nModified`` -- pymongo then fails with a KeyError
    instead of a BulkWriteError. After any failed batch, re-run it (upserts are idempotent)
    or reconcile by querying the batch's legacy ids; don't trust per-op error indexes."""
    ensure_contact_notes_index(coll)
    taken = ObjectId()
    coll.insert_one({"_id": taken, "company_sso_id": "co-a", "legacy_crm_note_id": "x"})
    specs = [
        _upsert_spec("co-a", "0"),
        _upsert_spec("co-a", "1", _id=taken),  # insert with an existing _id: E11000
        _upsert_spec("co-a", "2"),
    ]
    ops = [UpdateOne(flt, update, upsert=True) for flt, update in specs]
    migrated = {"company_sso_id": "co-a", "legacy_crm_note_id": {"$in": ["0", "1", "2"]}}
    if ferret:
        raw = coll.database.command(
            "update",
            coll.name,
            updates=[{"q": flt, "u": update, "upsert": True} for flt, update in specs],
            ordered=False,
            check=False,
        )
        assert [e["code"] for e in raw["writeErrors"]] == [11000]
        assert "nModified" not in raw
        assert sorted(d["legacy_crm_note_id"] for d in coll.find(migrated)) == ["0"]
        coll.delete_many(migrated)
        with pytest.raises((BulkWriteError, KeyError)):
            coll.bulk_write(ops, ordered=False)
        assert sorted(d["legacy_crm_note_id"] for d in coll.find(migrated)) == ["0"]
    else:
        with pytest.raises(BulkWriteError) as info:
            coll.bulk_write(ops, ordered=False)
        details = info.value.details
        assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 11000)]
        assert details["nUpserted"] == 2
        assert sorted(d["legacy_crm_note_id"] for d in coll.find(migrated)) == ["0", "2"]
    # the retry of the same batch without the bad row completes it on both servers
    res = coll.bulk_write([ops[0], ops[2]], ordered=False)
    assert res.upserted_count + res.matched_count == 2
    assert sorted(d["legacy_crm_note_id"] for d in coll.find(migrated)) == ["0", "2"]


def test_bulk_write_of_max_chunk_size_does_not_wedge_the_server(coll, stack_env, ferret):
    """FerretDB 1.x deadlocks (and stays wedged until restarted) when one update command
    carries more ops than its backend connection pool; max_bulk_write_ops() is the chunk
    size writers must respect. Own client with a socket timeout: a deadlock fails here
    instead of hanging the session."""
    limit = max_bulk_write_ops(coll)
    assert limit == (40 if ferret else 1000)
    with MongoClient(stack_env["NOTES_PIPELINE_MONGO_URI"], socketTimeoutMS=60_000) as client:
        c = client[coll.database.name][coll.name]
        ensure_contact_notes_index(c)
        ops = [_upsert("co-a", str(i)) for i in range(limit)]
        assert c.bulk_write(ops, ordered=False).upserted_count == limit
        assert c.bulk_write(ops, ordered=False).matched_count == limit  # the re-run path
        assert c.bulk_write(ops, ordered=False).matched_count == limit


# (3) ------------------------------------------------------------------------------------
def test_set_on_insert_keeps_caller_datetimes_utc_ms(coll, mongo_client):
    created = datetime(2021, 7, 1, 23, 59, 58, 123456, tzinfo=WIB)  # = 16:59:58.123 UTC
    updated = datetime(2023, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)
    coll.bulk_write([_upsert("co-a", "1", created_at=created, updated_at=updated)], ordered=False)
    doc = coll.find_one({"company_sso_id": "co-a", "legacy_crm_note_id": "1"})
    # default client: naive datetimes in UTC, truncated to milliseconds
    assert doc["created_at"] == datetime(2021, 7, 1, 16, 59, 58, 123000)
    assert doc["updated_at"] == datetime(2023, 1, 2, 3, 4, 5, 678000)
    assert doc["updated_at"] != doc["created_at"]

    aware = coll.with_options(
        codec_options=coll.codec_options.with_options(tz_aware=True, tzinfo=UTC)
    )
    doc = aware.find_one({"company_sso_id": "co-a", "legacy_crm_note_id": "1"})
    assert doc["created_at"] == created.replace(microsecond=123000)
    assert doc["created_at"].utcoffset() == timedelta(0)

    # stored as BSON dates (type 9), so range queries on them work
    assert coll.count_documents({"created_at": {"$type": "date"}}) == 1
    assert coll.count_documents({"created_at": {"$lt": datetime(2021, 7, 2, tzinfo=UTC)}}) == 1


# (4) ------------------------------------------------------------------------------------
def test_count_documents_migrated_notes_per_company(coll):
    ensure_contact_notes_index(coll)
    coll.bulk_write([_upsert("co-a", str(i)) for i in range(7)], ordered=False)
    coll.bulk_write([_upsert("co-b", str(i)) for i in range(3)], ordered=False)
    coll.insert_many([{"company_sso_id": "co-a", "note": "native"} for _ in range(4)])

    def migrated(company: str) -> dict:
        return {"company_sso_id": company, "legacy_crm_note_id": {"$exists": True}}

    assert coll.count_documents(migrated("co-a")) == 7
    assert coll.count_documents({"company_sso_id": "co-a"}) == 11
    assert coll.count_documents(migrated("co-b")) == 3
    assert coll.count_documents(migrated("co-c")) == 0


# (5) ------------------------------------------------------------------------------------
def test_aggregate_group_duplicate_scan(coll):
    # no unique index here: plant duplicates the index would normally prevent
    coll.insert_many(
        [{"company_sso_id": "co-a", "legacy_crm_note_id": str(i)} for i in range(6)]
        + [{"company_sso_id": "co-a", "legacy_crm_note_id": "2"}]
        + [{"company_sso_id": "co-a", "legacy_crm_note_id": "4"} for _ in range(2)]
        + [{"company_sso_id": "co-b", "legacy_crm_note_id": "2"}]  # other company: no dup
        + [{"company_sso_id": "co-a", "note": "native"} for _ in range(3)]  # natives: no dup
    )
    pipeline = [
        {"$match": {"company_sso_id": "co-a", "legacy_crm_note_id": {"$exists": True}}},
        {
            "$group": {
                "_id": {
                    "company_sso_id": "$company_sso_id",
                    "legacy_crm_note_id": "$legacy_crm_note_id",
                },
                "count": {"$sum": 1},
            }
        },
        {"$match": {"count": {"$gt": 1}}},
        {"$sort": {"_id.legacy_crm_note_id": 1}},
    ]
    dups = list(coll.aggregate(pipeline))
    assert [(d["_id"]["legacy_crm_note_id"], d["count"]) for d in dups] == [("2", 2), ("4", 3)]
    assert all(d["_id"]["company_sso_id"] == "co-a" for d in dups)

    coll.delete_many({"company_sso_id": "co-a", "legacy_crm_note_id": {"$in": ["2", "4"]}})
    assert list(coll.aggregate(pipeline)) == []


# (6) ------------------------------------------------------------------------------------
def test_find_in_over_crm_data_id_scoped_by_company(mongo_db):
    contacts = mongo_db[f"contacts_{uuid.uuid4().hex[:8]}"]
    try:
        name = ensure_contacts_index(contacts)
        assert ensure_contacts_index(contacts) == name  # idempotent
        index = {ix["name"]: ix for ix in contacts.list_indexes()}[name]
        assert list(index["key"].items()) == [(k, v) for k, v in CONTACTS_INDEX_KEYS]

        contacts.insert_many(
            [{"company_sso_id": "co-a", "crm_data": {"id": str(i)}, "n": i} for i in range(50)]
            + [{"company_sso_id": "co-b", "crm_data": {"id": str(i)}, "n": -i} for i in range(50)]
        )
        wanted = [str(i) for i in (3, 7, 11, 49, 999)]  # 999 does not exist
        found = list(
            contacts.find(
                {"company_sso_id": "co-a", "crm_data.id": {"$in": wanted}},
                {"_id": 1, "crm_data.id": 1, "company_sso_id": 1},
            )
        )
        assert sorted(d["crm_data"]["id"] for d in found) == ["11", "3", "49", "7"]
        assert {d["company_sso_id"] for d in found} == {"co-a"}
        # the int person id must be cast to string: an int never matches
        as_int = {"company_sso_id": "co-a", "crm_data.id": {"$in": [3]}}
        assert contacts.count_documents(as_int) == 0
    finally:
        mongo_db.drop_collection(contacts.name)


# (7) ------------------------------------------------------------------------------------
def test_company_preload_gives_the_batched_in_matches_and_stops_over_the_bound(mongo_db, stack_env):
    """SPEC-activity-logs §4.3 [N8]: one streamed company-scoped find answers what the
    per-batch $in on contacts.source_id / crm_contact_id_map answers (string source ids only,
    duplicates kept; map ids as numbers or digits), and reads no more than bound + 1."""
    company, other = f"co-{uuid.uuid4().hex[:6]}", f"co-{uuid.uuid4().hex[:6]}"
    cdp = CdpMongo(uri=stack_env["NOTES_PIPELINE_MONGO_URI"], database=mongo_db.name)
    mongo_db.contacts.insert_many(
        [{"_id": f"c-{i}", "company_sso_id": company, "source_id": str(i)} for i in range(6)]
        + [
            {"_id": "c-dup", "company_sso_id": company, "source_id": "3"},
            {"_id": "c-int", "company_sso_id": company, "source_id": 4},  # never a match
            {"_id": "c-none", "company_sso_id": company},
            {"_id": "x-1", "company_sso_id": other, "source_id": "1"},
        ]
    )
    mongo_db.crm_contact_id_map.insert_many(
        [
            {"company_sso_id": company, "crm_person_id": 10, "customer_id": "m-10"},
            {"company_sso_id": company, "crm_person_id": "11", "customer_id": "m-11"},
            {"company_sso_id": company, "crm_person_id": 12.5, "customer_id": "m-12"},
            {"company_sso_id": other, "crm_person_id": 13, "customer_id": "x-13"},
        ]
    )
    try:
        wanted = [str(i) for i in range(8)]
        preloaded = cdp.company_contact_source_ids(company, max_contacts=9)
        batched = cdp.contacts_by_source_id(company, wanted)
        assert {k: sorted(v) for k, v in preloaded.items()} == {
            k: sorted(v) for k, v in batched.items()
        }
        assert sorted(preloaded["3"]) == ["c-3", "c-dup"] and "4" in preloaded
        assert cdp.company_contact_source_ids(company, max_contacts=8) is None  # 9 contacts
        assert cdp.company_contact_id_map(company, max_rows=3) == {10: "m-10", 11: "m-11"}
        assert cdp.contact_id_map(company, [10, 11, 12, 13]) == {10: "m-10", 11: "m-11"}
        assert cdp.company_contact_id_map(company, max_rows=2) is None
    finally:
        mongo_db.contacts.delete_many({"company_sso_id": {"$in": [company, other]}})
        mongo_db.crm_contact_id_map.delete_many({"company_sso_id": {"$in": [company, other]}})


def test_set_on_insert_null_and_empty_array_fields(coll, ferret):
    """`owner_id: null` and `attachments: []` are stored by MongoDB; FerretDB 1.24.2 drops them."""
    coll.bulk_write([_upsert("c1", "1", owner_id=None, attachments=[], note="x")], ordered=False)
    stored = coll.find_one({"company_sso_id": "c1"}, {"_id": 0})
    if ferret:
        assert "owner_id" not in stored and "attachments" not in stored
    else:
        assert stored["owner_id"] is None and stored["attachments"] == []
    assert stored.get("owner_id") is None and stored.get("attachments", []) == []


# (8) ------------------------------------------------------------------------------------
def _placeholder(asset_id: str) -> dict:
    return {
        "type": "pdf",
        "url": None,
        "file_name": f"{asset_id}.pdf",
        "file_size_in_byte": None,
        "unavailable": True,
        "legacy_crm_asset_id": asset_id,
    }


def test_placeholders_found_per_company_and_replaced_in_place_only_once(mongo_db, stack_env):
    """Issue #12: the company-scoped placeholder query and the guarded in-place replacement
    (dot-notation array positions; standard MongoDB, also FerretDB 1.24)."""
    mongo = CdpMongo(uri=stack_env["NOTES_PIPELINE_MONGO_URI"], database=mongo_db.name)
    notes = mongo_db[CONTACT_NOTES]
    real = {"type": "image", "url": "https://cdp/a1", "file_name": "a1.png", "file_size_in_byte": 3}
    mine, other = f"co-{uuid.uuid4().hex[:6]}", f"co-{uuid.uuid4().hex[:6]}"
    first = {
        "company_sso_id": mine,
        "legacy_crm_note_id": "1",
        "note": "x",
        "updated_at": datetime(2024, 1, 2, 3, 4, 5),
        "attachments": [_placeholder("a1"), real, _placeholder("d3")],
    }
    notes.insert_many(
        [
            first,
            {"company_sso_id": mine, "legacy_crm_note_id": "2", "attachments": [real]},
            {"company_sso_id": mine, "note": "native", "attachments": [_placeholder("n1")]},
            {
                "company_sso_id": other,
                "legacy_crm_note_id": "1",
                "attachments": [_placeholder("z")],
            },
        ]
    )
    found = mongo.notes_with_unavailable_attachments(mine)
    assert found == {"1": first["attachments"]}  # migrated notes of this company only
    before = notes.find_one({"company_sso_id": mine, "legacy_crm_note_id": "1"})

    fixed = dict(real, url="https://cdp/d3", file_name="d3.pdf", type="pdf")
    assert mongo.replace_attachment_placeholders(mine, "1", [(2, "d3", fixed)])
    after = notes.find_one({"company_sso_id": mine, "legacy_crm_note_id": "1"})
    assert after["attachments"] == [_placeholder("a1"), real, fixed]
    rest = ("_id", "company_sso_id", "legacy_crm_note_id", "note", "updated_at")
    assert BSON.encode({k: after[k] for k in rest}) == BSON.encode({k: before[k] for k in rest})
    # the guards: a position that no longer holds that placeholder is never written
    assert not mongo.replace_attachment_placeholders(mine, "1", [(2, "d3", fixed)])
    assert not mongo.replace_attachment_placeholders(mine, "1", [(0, "d3", fixed)])
    assert not mongo.replace_attachment_placeholders(other, "2", [(0, "a1", fixed)])
    # several in one update: all or nothing
    assert not mongo.replace_attachment_placeholders(mine, "1", [(0, "a1", real), (1, "x", real)])
    assert notes.find_one({"_id": after["_id"]})["attachments"][0] == _placeholder("a1")
    assert mongo.replace_attachment_placeholders(mine, "1", [(0, "a1", real)])
    assert mongo.notes_with_unavailable_attachments(mine) == {}
    assert notes.find_one({"company_sso_id": other})["attachments"] == [_placeholder("z")]


def test_array_filters_and_elem_match_are_what_we_expect(coll, ferret):
    """Why the replacement uses array positions: FerretDB 1.24 implements no ``arrayFilters``,
    rejects an ``$elemMatch`` of two fields and answers one of a single field wrongly (0)."""
    coll.insert_one({"k": 1, "attachments": [_placeholder("a1")]})
    one_field = {"attachments": {"$elemMatch": {"legacy_crm_asset_id": "a1"}}}
    two_fields = {"attachments": {"$elemMatch": {"legacy_crm_asset_id": "a1", "unavailable": True}}}
    update = {"$set": {"attachments.$[e].url": "u"}}
    filters = [{"e.legacy_crm_asset_id": "a1", "e.unavailable": True}]
    if ferret:
        assert coll.count_documents(one_field) == 0  # wrong, silently
        with pytest.raises(OperationFailure):
            coll.count_documents(two_fields)
        with pytest.raises(OperationFailure):
            coll.update_one({"k": 1}, update, array_filters=filters)
    else:
        assert coll.count_documents(one_field) == coll.count_documents(two_fields) == 1
        assert coll.update_one({"k": 1}, update, array_filters=filters).modified_count == 1
