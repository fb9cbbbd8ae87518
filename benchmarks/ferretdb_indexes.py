"""Keyed queries on FerretDB 1.24 (PostgreSQL backend): sequential scans vs the stack's GIN indexes.

The local stack keeps a GIN index on FerretDB's pushdown expression for every indexed field
(``devtools/ferretdb_indexes.sql``) and sets ``plan_cache_mode = force_custom_plan`` on the
``ferretdb`` database. This measures what each part buys. Every variant gets its own
FerretDB process (``benchmarks/ferretdb_backends.ferretdb``, on the stack's ``ferretdb``
database, a free port) and its own throw-away MongoDB database:

  seqscan        the stack's GIN indexes dropped right after the collections are created
                 (FerretDB 1.24 as shipped: every keyed query is a sequential scan)
  gin            what the stack does (GIN indexes, custom plans)
  gin_auto_plans GIN indexes, but FerretDB's sessions on PostgreSQL's default
                 ``plan_cache_mode = auto`` (generic plans allowed)
  gin_path_ops   GIN indexes built with ``jsonb_path_ops`` instead of the default ``jsonb_ops``
  gin_pending_list  GIN indexes with GIN's default ``fastupdate = on`` (the stack before
                 2026-11-29): rows wait in a pending list every lookup scans
  gin_no_autoanalyze  the collections' tables never analyzed during the run (the stack
                 before 2026-11-29 analyzed them at most once a minute, after 10 % growth)

Workloads (seconds, lower is better):

  finds          ``contact_notes`` of --docs notes over 130 companies (insert_many; reported
                 as ``insert_s``), then 100 keyed ``find_one({company_sso_id,
                 legacy_crm_note_id})``
  load           the loader's write pattern on a fresh ``contact_notes``: --load notes as
                 ``UpdateOne(key, {$setOnInsert: note}, upsert=True)``, batches of 500 sent
                 as ``bulk_write`` chunks of 40, then the same batches again (all matched)
  contacts_in    ``contacts`` of --docs contacts over 130 companies, 20 lookups
                 ``{company_sso_id, crm_data.id: {$in: 500 ids}}`` (``$in`` is never pushed
                 down; the company filter is)

Usage (stack up first):
  .venv/bin/python benchmarks/ferretdb_indexes.py [--docs 60000] [--load 10000]
      [--variants seqscan,gin,gin_auto_plans,gin_path_ops] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
from psycopg2 import sql
from pymongo import MongoClient, UpdateOne

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ferretdb_backends import ferretdb, note_doc, stack_env  # noqa: E402

from notes_pipeline.core.resources.mongo_indexes import (  # noqa: E402
    ensure_contact_notes_index,
    ensure_contacts_index,
)

VARIANTS = (
    "seqscan",
    "gin",
    "gin_auto_plans",
    "gin_path_ops",
    "gin_pending_list",
    "gin_no_autoanalyze",
)
COMPANIES = 130
BATCH, CHUNK = 500, 40


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gin_indexes(cur, dbname: str) -> list[tuple[str, str, str]]:
    """(table, index, field) of the stack's GIN indexes in one FerretDB database."""
    cur.execute(
        "SELECT c.relname, g.index_name::text, g.field FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " CROSS JOIN LATERAL notes_pipeline_stack.gin_indexes(c.oid) g"
        " WHERE n.nspname = %s AND c.relkind = 'r'",
        (dbname,),
    )
    return cur.fetchall()


def adjust_indexes(pg_dsn: str, dbname: str, variant: str) -> None:
    """Drop (seqscan), rebuild with jsonb_path_ops (gin_path_ops), give a pending list
    (gin_pending_list) the stack's GIN indexes, or stop analyzing their tables
    (gin_no_autoanalyze)."""
    if variant not in ("seqscan", "gin_path_ops", "gin_pending_list", "gin_no_autoanalyze"):
        return
    with closing(psycopg2.connect(pg_dsn)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        found = gin_indexes(cur, dbname)
        assert found, f"no GIN indexes in {dbname}: is the stack's SQL installed?"
        for table, index, field in found:
            if variant == "gin_pending_list":
                cur.execute(sql.SQL("ALTER INDEX {} SET (fastupdate = on)").format(sql.SQL(index)))
                continue
            if variant == "gin_no_autoanalyze":
                cur.execute(
                    sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(
                        sql.Identifier(dbname, table)
                    )
                )
                continue
            cur.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(index)))
            if variant == "gin_path_ops":
                cur.execute("SELECT notes_pipeline_stack.pushdown_expression(%s)", (field,))
                expr = cur.fetchone()[0]
                cur.execute(
                    sql.SQL("CREATE INDEX ON {} USING gin ({} jsonb_path_ops)").format(
                        sql.Identifier(dbname, table), sql.SQL(expr)
                    )
                )


def index_sizes(pg_dsn: str, dbname: str) -> dict[str, int]:
    with closing(psycopg2.connect(pg_dsn)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT sum(pg_relation_size(c.oid)) FILTER (WHERE c.relkind = 'r'),"
            " sum(pg_relation_size(c.oid)) FILTER (WHERE c.relkind = 'i' AND am.amname = 'gin'),"
            " sum(pg_relation_size(c.oid)) FILTER (WHERE c.relkind = 'i' AND am.amname = 'btree')"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_am am ON am.oid = c.relam"
            " WHERE n.nspname = %s AND c.relname NOT LIKE '\\_ferretdb%%'",
            (dbname,),
        )
        table, gin, btree = cur.fetchone()
    return {
        "table_bytes": int(table or 0),
        "gin_bytes": int(gin or 0),
        "btree_bytes": int(btree or 0),
    }


def run_variant(uri: str, pg_dsn: str, variant: str, docs: int, load: int) -> dict[str, float]:
    dbname = f"bench_ix_{uuid.uuid4().hex[:10]}"
    base = datetime(2021, 1, 1, tzinfo=UTC)
    out: dict[str, float] = {}
    with MongoClient(uri, socketTimeoutMS=900_000) as client:
        db = client[dbname]
        try:
            notes, loaded, contacts = db["contact_notes"], db["loaded_notes"], db["contacts"]
            for coll in (notes, loaded):
                ensure_contact_notes_index(coll)
            ensure_contacts_index(contacts)
            adjust_indexes(pg_dsn, dbname, variant)

            # finds: 100 keyed find_one on `docs` notes
            company = [f"bench-{i:03d}" for i in range(COMPANIES)]
            t = time.perf_counter()
            for start in range(0, docs, 5000):
                notes.insert_many(
                    [
                        note_doc(company[i % COMPANIES], i, base)
                        for i in range(start, min(start + 5000, docs))
                    ]
                )
            out["finds.insert_s"] = time.perf_counter() - t
            keys = [(company[i % COMPANIES], str(100_000 + i)) for i in range(0, docs, docs // 100)]
            t = time.perf_counter()
            for cid, legacy in keys[:100]:
                assert notes.find_one({"company_sso_id": cid, "legacy_crm_note_id": legacy})
            out["finds.100_find_one_s"] = time.perf_counter() - t

            # load: the loader's upsert pattern on a fresh collection
            cid = f"load-{uuid.uuid4().hex[:8]}"
            batches = [
                [
                    UpdateOne(
                        {"company_sso_id": cid, "legacy_crm_note_id": str(100_000 + i)},
                        {"$setOnInsert": note_doc(cid, i, base)},
                        upsert=True,
                    )
                    for i in range(start, min(start + BATCH, load))
                ]
                for start in range(0, load, BATCH)
            ]
            for phase, attr in (("insert", "upserted_count"), ("rerun", "matched_count")):
                per_batch = []
                t0 = time.perf_counter()
                for ops in batches:
                    t = time.perf_counter()
                    got = sum(
                        getattr(loaded.bulk_write(ops[s : s + CHUNK], ordered=False), attr)
                        for s in range(0, len(ops), CHUNK)
                    )
                    assert got == len(ops), (phase, got)
                    per_batch.append(time.perf_counter() - t)
                out[f"load.{phase}_s"] = time.perf_counter() - t0
                out[f"load.{phase}_first_batch_s"] = per_batch[0]
                out[f"load.{phase}_last_batch_s"] = per_batch[-1]
            out["load.insert_notes_per_s"] = load / out["load.insert_s"]

            # contacts_in: company-scoped $in lookups
            for start in range(0, docs, 5000):
                contacts.insert_many(
                    [
                        {"company_sso_id": company[i % COMPANIES], "crm_data": {"id": str(i)}}
                        for i in range(start, min(start + 5000, docs))
                    ]
                )
            t = time.perf_counter()
            found = 0
            for n in range(20):
                cid_n = company[n]
                ids = [str(i) for i in range(n, docs, COMPANIES)][:500]
                found += len(
                    list(contacts.find({"company_sso_id": cid_n, "crm_data.id": {"$in": ids}}))
                )
            out["contacts_in.20_finds_s"] = time.perf_counter() - t
            assert found > 0
            out.update({f"size.{k}": v for k, v in index_sizes(pg_dsn, dbname).items()})
            return out
        finally:
            client.drop_database(dbname)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--docs", type=int, default=60_000)
    ap.add_argument("--load", type=int, default=10_000)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    env = stack_env()
    pg_dsn = env["NOTES_PIPELINE_FERRETDB_DSN"]
    results: dict[str, dict[str, float]] = {}
    for variant in args.variants.split(","):
        assert variant in VARIANTS, variant
        params = {"plan_cache_mode": "auto"} if variant == "gin_auto_plans" else {}
        with ferretdb(
            "postgresql", env, port=free_port(), pg_params=params, name=f"ix-{variant}"
        ) as uri:
            results[variant] = run_variant(uri, pg_dsn, variant, args.docs, args.load)
        print(variant, json.dumps(results[variant]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    cols = list(next(iter(results.values())))
    print(f"docs={args.docs} load={args.load}; seconds unless named otherwise\n")
    print("| metric | " + " | ".join(results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for col in cols:
        print(f"| {col} | " + " | ".join(f"{r[col]:,.3f}" for r in results.values()) + " |")


if __name__ == "__main__":
    main()
