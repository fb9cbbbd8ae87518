"""Keyed queries are served by an index, on whichever MongoDB server the stack runs.

The product's keyed reads and writes (``contact_notes`` by ``(company_sso_id,
legacy_crm_note_id)``) must not scan the collection:

* MongoDB: ``explain`` of the find and of the upserting ``update`` has an ``IXSCAN`` on the
  product's index and no ``COLLSCAN``.
* FerretDB 1.24, PostgreSQL backend (the local stack): FerretDB pushes an equality filter down
  as ``_jsonb -> 'field' @> '"value"'``, which its btree indexes cannot serve; the stack keeps a
  GIN index on that expression for every indexed field (``devtools/ferretdb_indexes.sql``).
  ``explain`` of the find returns PostgreSQL's plan: it must use those GIN indexes and no
  ``Seq Scan``. FerretDB's ``explain`` ignores an ``update``'s filter (it explains an
  unfiltered select, ``filterPushdown: false``), so for the upsert the test takes the very
  statement FerretDB ran for the upsert's lookup from ``pg_stat_activity`` and has PostgreSQL
  ``EXPLAIN`` it with the filter's values.
* FerretDB's SQLite backend has no such indexes: those tests are skipped there.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql

from devtools.ferretdb_indexes import coverage
from notes_pipeline.core.resources.mongo_indexes import (
    CONTACT_NOTES_INDEX_NAME,
    ensure_contact_notes_index,
    ensure_contacts_index,
)

pytestmark = pytest.mark.stack

COMPANIES = 20
DOCS = 2_000


@pytest.fixture(scope="module")
def server(mongo_client, stack_env) -> str:
    """``mongodb``, ``ferretdb-postgresql`` or ``ferretdb-sqlite``."""
    if "ferretdbVersion" not in mongo_client.admin.command("buildInfo"):
        return "mongodb"
    return f"ferretdb-{stack_env.get('NOTES_PIPELINE_FERRETDB_BACKEND') or 'postgresql'}"


@pytest.fixture(scope="module")
def ferretdb_pg(server, stack_env) -> Iterator[psycopg2.extensions.connection]:
    """Autocommit connection to the PostgreSQL database behind the stack's FerretDB."""
    if server == "mongodb":
        yield None
        return
    if server == "ferretdb-sqlite":
        pytest.skip("FerretDB's SQLite backend has no index for keyed queries (docs/MONGODB.md)")
    dsn = stack_env.get("NOTES_PIPELINE_FERRETDB_DSN")
    assert dsn, "NOTES_PIPELINE_FERRETDB_DSN missing from .stack/env: re-run `make up`"
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    yield conn
    conn.close()


def key(i: int) -> dict[str, str]:
    return {"company_sso_id": f"company-{i % COMPANIES:02d}", "legacy_crm_note_id": str(10_000 + i)}


@pytest.fixture
def notes(mongo_db, ferretdb_pg):
    """A ``contact_notes``-like collection with the product's index and DOCS notes."""
    name = f"contact_notes_{uuid.uuid4().hex[:8]}"
    coll = mongo_db[name]
    ensure_contact_notes_index(coll)
    coll.insert_many([{**key(i), "note": f"note {i}", "is_deleted": False} for i in range(DOCS)])
    yield coll
    mongo_db.drop_collection(name)


# ------------------------------------------------------------------ plan inspection
def plan_nodes(plan) -> Iterator[dict]:
    """Every node of a PostgreSQL JSON plan (``{"Plan": ...}`` or a list of them)."""
    if isinstance(plan, list):
        for item in plan:
            yield from plan_nodes(item)
        return
    node = plan.get("Plan", plan)
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def mongo_stages(plan) -> Iterator[dict]:
    """Every stage of a MongoDB winning plan (classic or SBE shape)."""
    if isinstance(plan, dict):
        if "stage" in plan:
            yield plan
        for value in plan.values():
            yield from mongo_stages(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from mongo_stages(item)


def gin_fields(conn, coll) -> dict[str, str]:
    """GIN index name (unqualified) -> indexed field, for ``coll``'s table."""
    rows = coverage(conn, [coll.database.name])
    assert rows, f"no FerretDB metadata for {coll.database.name}"
    mine = [r for r in rows if r.collection == coll.name]
    missing = [r.field for r in mine if r.gin_index is None]
    assert not missing, f"{coll.full_name}: declared fields without a GIN index: {missing}"
    return {r.gin_index.rsplit(".", 1)[-1]: r.field for r in mine}


def assert_served_by_gin(plan, conn, coll) -> None:
    nodes = list(plan_nodes(plan))
    types = [n["Node Type"] for n in nodes]
    assert "Seq Scan" not in types, json.dumps(plan)[:2000]
    by_name = gin_fields(conn, coll)
    used = {n["Index Name"] for n in nodes if "Index Name" in n}
    assert used and used <= set(by_name), (used, by_name, types)
    # the selective key is among the index conditions
    assert "legacy_crm_note_id" in {by_name[name] for name in used}, used


def assert_ixscan(winning_plan) -> None:
    stages = list(mongo_stages(winning_plan))
    names = [s["stage"] for s in stages]
    assert "COLLSCAN" not in names, winning_plan
    assert CONTACT_NOTES_INDEX_NAME in {
        s.get("indexName") for s in stages if s["stage"] == "IXSCAN"
    }


# ------------------------------------------------------------------ the keyed find
def test_keyed_find_uses_an_index(notes, server, ferretdb_pg):
    flt = key(1234)
    assert notes.find_one(flt)["note"] == "note 1234"
    explained = notes.database.command(
        "explain", {"find": notes.name, "filter": flt}, verbosity="queryPlanner"
    )
    if server == "mongodb":
        assert_ixscan(explained["queryPlanner"]["winningPlan"])
        return
    assert explained["filterPushdown"] is True
    assert_served_by_gin(explained["queryPlanner"], ferretdb_pg, notes)


# ------------------------------------------------------------------ the keyed upsert
def last_lookup_statement(conn, coll) -> str | None:
    """The newest SELECT with a WHERE clause on ``coll``'s table among FerretDB's sessions."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT _jsonb ->> 'table' FROM {} WHERE _jsonb ->> '_id' = %s").format(
                sql.Identifier(coll.database.name, "_ferretdb_database_metadata")
            ),
            (coll.name,),
        )
        table = sql.Identifier(coll.database.name, cur.fetchone()[0]).as_string(conn)
        cur.execute(
            "SELECT query FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            "   AND query LIKE 'SELECT %%' AND strpos(query, %s) > 0"
            "   AND strpos(query, ' WHERE ') > 0"
            " ORDER BY state_change DESC LIMIT 1",
            (f"FROM {table} ",),
        )
        row = cur.fetchone()
    return row[0] if row else None


def test_keyed_upsert_uses_an_index(notes, server, ferretdb_pg):
    flt = {"company_sso_id": "company-07", "legacy_crm_note_id": "new-note-1"}
    update = {"$setOnInsert": {**flt, "note": "upserted", "is_deleted": False}}
    inserted = notes.update_one(flt, update, upsert=True)
    assert inserted.upserted_id is not None
    if server == "mongodb":
        explained = notes.database.command(
            "explain",
            {"update": notes.name, "updates": [{"q": flt, "u": update, "upsert": True}]},
            verbosity="queryPlanner",
        )
        assert_ixscan(explained["queryPlanner"]["winningPlan"])
        return
    # The re-run's upsert (matched: nothing written) leaves its lookup as the newest statement
    # of its FerretDB session. Another statement could reuse that session in between (none is
    # sent by this test), so look a few times.
    statement = None
    for _ in range(3):
        matched = notes.update_one(flt, update, upsert=True)
        assert (matched.matched_count, matched.upserted_id) == (1, None)
        statement = last_lookup_statement(ferretdb_pg, notes)
        if statement:
            break
    assert statement, "FerretDB's lookup for the upsert not found in pg_stat_activity"
    # FerretDB binds each pushed-down key and its JSON value, in filter order
    params = [p for field, value in flt.items() for p in (field, json.dumps(value))]
    assert statement.count("$") == len(params), statement
    name = f"upsert_lookup_{uuid.uuid4().hex[:8]}"
    with ferretdb_pg.cursor() as cur:
        cur.execute(f"PREPARE {name} AS {statement}")
        try:
            placeholders = ", ".join(["%s"] * len(params))
            cur.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({placeholders})", params)
            plan = cur.fetchone()[0]
        finally:
            cur.execute(f"DEALLOCATE {name}")
    assert_served_by_gin(plan, ferretdb_pg, notes)


# ------------------------------------------------------------------ the stack's mechanism
def test_gin_indexes_follow_the_declared_indexes_of_new_collections(
    mongo_client, server, ferretdb_pg
):
    """Collections and databases created after the stack started get their GIN indexes from
    the triggers; dropIndexes removes a field's GIN index, dropping the collection the rest."""
    if server == "mongodb":
        pytest.skip("GIN indexes are the local FerretDB stack's; MongoDB has its own indexes")
    db = mongo_client[f"gin_probe_{uuid.uuid4().hex[:8]}"]  # a database new to FerretDB
    try:
        contacts = db["contacts"]
        ensure_contacts_index(contacts)  # (company_sso_id, crm_data.id)
        contacts.create_index([("company_sso_id", 1), ("source_id", 1)], name="by_source")
        locks = db["locks"]
        locks.insert_one({"_id": "lock-1"})  # only the implicit _id_ index

        def fields(coll) -> set[str]:
            return set(gin_fields(ferretdb_pg, coll).values())

        assert fields(contacts) == {"_id", "company_sso_id", "crm_data.id", "source_id"}
        assert fields(locks) == {"_id"}

        contacts.drop_index("by_source")
        assert fields(contacts) == {"_id", "company_sso_id", "crm_data.id"}

        contacts.drop()
        assert [r for r in coverage(ferretdb_pg, [db.name]) if r.collection == "contacts"] == []
    finally:
        mongo_client.drop_database(db.name)


def test_gin_indexes_keep_no_pending_list(notes, server, ferretdb_pg):
    """GIN's default pending list is scanned linearly by every lookup until a vacuum merges
    it, so a load's keyed upserts slowed as it went on; the stack's GIN indexes are built
    with ``fastupdate = off`` and a lookup after the inserts reads a handful of pages."""
    if server == "mongodb":
        pytest.skip("GIN indexes are the local FerretDB stack's")
    names = list(gin_fields(ferretdb_pg, notes))
    with ferretdb_pg.cursor() as cur:
        cur.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s) ORDER BY 1",
            (names,),
        )
        options = dict(cur.fetchall())
    assert sorted(options) == sorted(names)
    assert all("fastupdate=off" in (opts or []) for opts in options.values()), options


def test_ferretdb_sessions_plan_each_keyed_query_with_its_values(notes, server, ferretdb_pg):
    """FerretDB runs cached prepared statements (``_jsonb -> $1 @> $2``). A generic plan cannot
    match the GIN expressions; the ``ferretdb`` database makes every session plan with the
    bound values (``plan_cache_mode = force_custom_plan``)."""
    if server == "mongodb":
        pytest.skip("FerretDB's PostgreSQL sessions only")
    with ferretdb_pg.cursor() as cur:
        cur.execute("SHOW plan_cache_mode")  # a new session gets the database's setting
        assert cur.fetchone()[0] == "force_custom_plan"
        cur.execute(
            sql.SQL("SELECT _jsonb ->> 'table' FROM {} WHERE _jsonb ->> '_id' = %s").format(
                sql.Identifier(notes.database.name, "_ferretdb_database_metadata")
            ),
            (notes.name,),
        )
        table = sql.Identifier(notes.database.name, cur.fetchone()[0])
        name = f"keyed_{uuid.uuid4().hex[:8]}"
        cur.execute(
            sql.SQL("PREPARE {} AS SELECT _jsonb FROM {} WHERE _jsonb -> $1 @> $2").format(
                sql.Identifier(name), table
            )
        )
        args = ["legacy_crm_note_id", json.dumps("10042")]
        plans = {}
        try:
            for mode in ("force_custom_plan", "force_generic_plan"):
                cur.execute(sql.SQL("SET plan_cache_mode = {}").format(sql.Identifier(mode)))
                cur.execute(
                    sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE {}(%s, %s)").format(
                        sql.Identifier(name)
                    ),
                    args,
                )
                plans[mode] = [n["Node Type"] for n in plan_nodes(cur.fetchone()[0])]
        finally:
            cur.execute(sql.SQL("DEALLOCATE {}").format(sql.Identifier(name)))
            cur.execute("RESET plan_cache_mode")
    assert "Seq Scan" not in plans["force_custom_plan"], plans
    assert "Seq Scan" in plans["force_generic_plan"], plans
