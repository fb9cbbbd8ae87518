"""Index-backed keyed queries for the local stack's FerretDB (PostgreSQL backend).

FerretDB 1.24 pushes an equality filter down to PostgreSQL as ``_jsonb -> 'field' @> '"v"'``,
which its own btree indexes cannot serve, so every query is a sequential scan.
``ferretdb_indexes.sql`` (beside this file) makes PostgreSQL keep one GIN index on that
expression for every field of every index a FerretDB collection declares, for collections
that exist and for those created later (event trigger + row trigger on FerretDB's metadata
tables), and makes FerretDB's prepared statements use custom plans (``plan_cache_mode``).
Details and measurements: docs/MONGODB.md, "Index-backed keyed queries".

``scripts/stack.sh up`` runs that SQL with ``psql`` as the superuser (event triggers need
one) on the ``ferretdb`` database, on every ``up``. This module reports what it achieved,
connecting with a DSN read from an environment variable (never argv)::

    python -m devtools.ferretdb_indexes status [--dsn-env V] # collection, field, GIN index
    python -m devtools.ferretdb_indexes check  [--dsn-env V] # exit 1 if a declared field
                                                             # has no GIN index

``V`` defaults to ``NOTES_PIPELINE_FERRETDB_DSN`` (``.stack/env``: the ``ferretdb`` database
as ``notes_admin``).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

DSN_ENV = "NOTES_PIPELINE_FERRETDB_DSN"

#: one row per (FerretDB database, collection, declared field): the GIN index serving it
#: (NULL when missing)
_COVERAGE_SQL = """
SELECT n.nspname,
       m._jsonb ->> '_id',
       f.field,
       (SELECT g.index_name::text
          FROM notes_pipeline_stack.gin_indexes(to_regclass(
                   format('%%I.%%I', n.nspname, m._jsonb ->> 'table'))) AS g
         WHERE g.field = f.field)
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  CROSS JOIN LATERAL (SELECT _jsonb FROM {meta}) AS m
  CROSS JOIN LATERAL notes_pipeline_stack.declared_fields(m._jsonb) AS f(field)
 WHERE c.relname = '_ferretdb_database_metadata' AND n.nspname = %s
 ORDER BY 1, 2, 3
"""


@dataclass(frozen=True)
class Coverage:
    """One field a FerretDB collection's indexes declare, and the GIN index serving it."""

    database: str
    collection: str
    field: str
    gin_index: str | None  # "schema.name", or None when missing


def coverage(conn, databases: list[str] | None = None) -> list[Coverage]:
    """Every declared field of every collection in ``databases`` (default: all FerretDB
    databases), with its GIN index or None. ``conn``: a psycopg2 connection to the
    ``ferretdb`` PostgreSQL database. Raises ``psycopg2.Error`` when the SQL is not installed.
    """
    from psycopg2 import sql

    with conn.cursor() as cur:
        if databases is None:
            cur.execute(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relname = '_ferretdb_database_metadata' ORDER BY 1"
            )
            databases = [row[0] for row in cur.fetchall()]
        rows: list[Coverage] = []
        for db in databases:
            meta = sql.Identifier(db, "_ferretdb_database_metadata")
            query = sql.SQL(_COVERAGE_SQL).format(meta=meta)
            cur.execute(query, (db,))
            rows.extend(Coverage(*row) for row in cur.fetchall())
    return rows


def _connect(dsn_env: str):
    import psycopg2

    dsn = os.environ.get(dsn_env)
    if not dsn:
        sys.exit(f"{dsn_env} is not set (source .stack/env)")
    return psycopg2.connect(dsn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.ferretdb_indexes")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("status", "check"):
        p = sub.add_parser(name)
        p.add_argument("--dsn-env", default=DSN_ENV)
        p.add_argument("--database", action="append", help="FerretDB database (repeatable)")
    args = parser.parse_args(argv)
    conn = _connect(args.dsn_env)
    try:
        rows = coverage(conn, args.database)
    finally:
        conn.close()
    missing = [r for r in rows if r.gin_index is None]
    if args.command == "status":
        for r in rows:
            print(f"{r.database}.{r.collection}\t{r.field}\t{r.gin_index or 'MISSING'}")
    print(f"{len(rows)} declared fields, {len(missing)} without a GIN index", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
