"""PooledPostgresStorage on the stack's PostgreSQL: how many connections it opens, the tables it
creates on an empty database, dead connections replaced before use, and its schema probes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg2
import pytest
import sqlalchemy
from isolation import _recreate_database, _with_database, dagster_postgres_url, drop_database

from notes_pipeline.instance import storage as pooled

pytestmark = pytest.mark.stack


@pytest.fixture
def new_connections() -> Iterator[list[object]]:
    """Every DBAPI connection any SQLAlchemy engine opens while the test runs."""
    opened: list[object] = []

    def record(dbapi_connection, _record) -> None:
        opened.append(dbapi_connection)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", record)
    yield opened
    sqlalchemy.event.remove(sqlalchemy.engine.Engine, "connect", record)


def dispose(storage: pooled.PooledPostgresStorage) -> None:
    for inner in (storage._run_storage, storage._event_log_storage, storage._schedule_storage):
        inner._engine.dispose()


def test_existing_tables_are_looked_for_once_on_a_pooled_connection(new_connections):
    first = pooled.PooledPostgresStorage(dagster_postgres_url())  # the tables exist after it
    first.run_storage.get_runs(limit=1)
    dispose(first)
    new_connections.clear()

    storage = pooled.PooledPostgresStorage(dagster_postgres_url())
    try:
        assert len(new_connections) == 1  # dagster-postgres alone opens one per storage: 3
        storage.run_storage.get_runs(limit=1)
        assert len(new_connections) == 1  # the check's connection is the pool's
    finally:
        dispose(storage)


def test_an_empty_database_gets_every_dagster_table():
    admin_dsn = os.environ["NOTES_PIPELINE_CRM_ADMIN_DSN"]
    name = os.environ["DAGSTER_PG_DB"] + "_empty"
    _recreate_database(admin_dsn, name)
    owner = os.environ["DAGSTER_PG_USER"]
    conn = psycopg2.connect(_with_database(admin_dsn, name))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{name}" OWNER TO "{owner}"')
            cur.execute(f'ALTER SCHEMA public OWNER TO "{owner}"')
    finally:
        conn.close()
    storage = pooled.PooledPostgresStorage(dagster_postgres_url(name))
    try:
        assert storage.run_storage.get_runs(limit=1) == []
        assert storage.event_log_storage.get_logs_for_run("no-such-run") == []
        assert list(storage.schedule_storage.all_instigator_state()) == []
        tables = set(sqlalchemy.inspect(storage._run_storage._engine).get_table_names())
        assert pooled.DAGSTER_MAIN_TABLES <= tables
    finally:
        dispose(storage)
        conn = psycopg2.connect(admin_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            drop_database(cur, name)
        conn.close()


def kill_backend(engine: sqlalchemy.engine.Engine) -> None:
    """Terminate the server process behind the engine's one pooled connection (and wait for it
    to end), leaving the dead connection in the pool."""
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    url = engine.url
    killer = psycopg2.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database
    )
    killer.autocommit = True
    try:
        with killer.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
            assert cur.fetchone()[0] is True
    finally:
        killer.close()


def test_a_dead_pooled_connection_is_replaced_before_use():
    """A PostgreSQL restart ends every pooled connection: the next checkout finds out (pre-ping)
    and opens a new one instead of failing the caller's statement."""
    engine = pooled.pooled_engine(dagster_postgres_url())
    try:
        kill_backend(engine)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()


def test_schema_probes_keep_true_answers_and_ask_again_after_false():
    storage = pooled.PooledPostgresStorage(dagster_postgres_url())
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_rest) -> None:
        statements.append(statement)

    engine = storage._event_log_storage._engine
    sqlalchemy.event.listen(engine, "before_cursor_execute", record)
    try:
        events = storage.event_log_storage
        assert events.has_table("dynamic_partitions") is True
        asked = len(statements)
        assert asked > 0
        assert events.has_table("dynamic_partitions") is True
        assert len(statements) == asked
        assert events.has_table("no_such_table") is False
        assert events.has_table("no_such_table") is False
        assert len(statements) > asked + 1  # a false answer is never kept
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", record)
        dispose(storage)


def test_remember_true_keys_on_the_arguments():
    answers = {"a": True, "b": False}
    calls: list[str] = []

    def probe(name: str) -> bool:
        calls.append(name)
        return answers[name]

    remembered = pooled.remember_true(probe)
    assert [remembered("a"), remembered("a"), remembered("b"), remembered("b")] == [
        True,
        True,
        False,
        False,
    ]
    assert calls == ["a", "b", "b"]
    answers["b"] = True
    assert remembered("b") and remembered("b")
    assert calls == ["a", "b", "b", "b"]
