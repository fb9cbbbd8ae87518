"""dagster-postgres storage that reuses its connections.

``DagsterPostgresStorage`` builds its run, event-log and schedule storages on SQLAlchemy
``NullPool`` engines: every storage call opens a new PostgreSQL connection (TCP, SCRAM
authentication, a new backend process). A migrate_cid run makes ~250 storage calls, so with 130
CIDs per backfill that handshake becomes most of the run time (BENCHMARKS.md). This subclass
gives each storage a small ``QueuePool`` in every process, the way dagster-webserver already
does for itself (``optimize_for_webserver``).

Not a public Dagster API: this relies on dagster-postgres internals pinned to Dagster 1.13
(``DagsterPostgresStorage._run_storage``/``_event_log_storage``/``_schedule_storage``, each
storage's ``_engine``, ``dagster_postgres.utils.create_pg_engine``/``pg_url_from_config`` and
``dagster._core.storage.config.pg_config``). ``notes_pipeline_tests/test_private_dagster_apis.py``
fails with a clear message when one of them changes; the fallback is ``dagster.stock.yaml``
(plain dagster-postgres, same database and tables), see ``docs/INSTANCE.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import psycopg2
import sqlalchemy as db
from dagster._config.config_schema import UserConfigSchema  # private (type alias only)
from dagster._core.storage.config import pg_config  # private: dagster-postgres' config schema
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import (  # undocumented helpers
    create_pg_engine,
    pg_url_from_config,
    retry_pg_connection_fn,
)
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

# One connection kept per storage; threads (daemon workers, submit pools) get overflow ones.
# pre_ping replaces a connection the server dropped (restart, idle timeout) before it is used.
POOL_SETTINGS: Mapping[str, Any] = {
    "isolation_level": "AUTOCOMMIT",
    "pool_size": 1,
    "max_overflow": 10,
    "pool_recycle": 300,
    "pool_pre_ping": True,
}
# Schema probes the dagster-postgres storages run on every call, each a catalog query (~60 per
# run worker, e.g. has_table("dynamic_partitions") before every partition lookup). Migrations
# only add tables and columns, so a true answer is kept for the life of the storage; a false one
# is asked again.
SCHEMA_PROBES: Mapping[str, tuple[str, ...]] = {
    "_run_storage": (
        "has_run_stats_index_cols",
        "has_bulk_actions_selector_cols",
        "has_backfill_id_column",
        "has_bulk_action_job_name_column",
        "has_backfill_tags_table",
    ),
    "_event_log_storage": ("has_table", "has_asset_key_col"),
    "_schedule_storage": ("has_instigators_table",),
}
# The tables each dagster-postgres storage checks for before creating its schema.
DAGSTER_MAIN_TABLES = frozenset({"runs", "instance_info", "event_logs", "jobs"})


class PooledPostgresStorage(DagsterPostgresStorage):
    """``DagsterPostgresStorage`` whose three storages keep pooled connections.

    Configured in ``dagster.yaml`` as ``storage: custom: {module: notes_pipeline.instance.storage,
    class: PooledPostgresStorage, config: <the dagster-postgres storage config>}``; it accepts
    exactly the config of ``storage: postgres`` (``postgres_url`` or ``postgres_db``,
    ``should_autocreate_tables``) and uses the same database and tables, so an instance can
    switch between this class and plain dagster-postgres at any time.

    Per process, each of the run, event-log and schedule storages holds one idle connection
    (``POOL_SETTINGS``: ``pool_size`` 1, up to ``max_overflow`` 10 more while threads need
    them, recycled after ``pool_recycle`` 300 s, checked with ``pool_pre_ping`` before use), so at
    most 33 connections per process. The tables are looked for once, through the run storage's
    pool (dagster-postgres looks three times, each on a new connection); only when one is
    missing does dagster-postgres create them. The ``SCHEMA_PROBES`` keep their true answers.
    Not supported (unlike stock dagster-postgres): the ``auth_provider`` (Azure workload
    identity token) option.
    """

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None):
        """Build the dagster-postgres storages, then swap their engines for pooled ones.

        Args:
            postgres_url: SQLAlchemy URL of the Dagster database, e.g.
                ``postgresql+psycopg2://user:password@host:port/db``.
            should_autocreate_tables: create (and stamp) the Dagster tables if missing, as
                dagster-postgres does; the tables are looked for once, on the run storage's
                pooled engine, and dagster-postgres connects only when one is missing.
            inst_data: the ``ConfigurableClassData`` the instance loaded this class from, or None.

        Raises:
            dagster_postgres.utils.DagsterPostgresException: PostgreSQL stayed unreachable or
                refused the login through dagster-postgres' 5 retries (only checked here when
                ``should_autocreate_tables``; otherwise the first storage call raises it).
            AttributeError: dagster-postgres no longer keeps its storages in ``_run_storage``,
                ``_event_log_storage``, ``_schedule_storage`` with an ``_engine`` each (a Dagster
                upgrade; see docs/INSTANCE.md).
        """
        engines = [pooled_engine(postgres_url) for _ in range(3)]
        create = should_autocreate_tables and not DAGSTER_MAIN_TABLES <= _tables(engines[0])
        super().__init__(postgres_url, create, inst_data=inst_data)
        self.should_autocreate_tables = should_autocreate_tables
        storages = (self._run_storage, self._event_log_storage, self._schedule_storage)
        for storage, engine in zip(storages, engines, strict=True):
            storage.should_autocreate_tables = should_autocreate_tables
            storage._engine.dispose()
            storage._engine = engine
            storage.optimize_for_webserver = _checked_webserver_engine(storage)
        for attr, probes in SCHEMA_PROBES.items():
            storage = getattr(self, attr)
            for name in probes:
                setattr(storage, name, remember_true(getattr(storage, name)))

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        """The config schema of ``storage: postgres`` (dagster-postgres' ``pg_config()``)."""
        return pg_config()

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledPostgresStorage:
        """Build the storage from its validated ``dagster.yaml`` config (env vars resolved).

        Args:
            inst_data: the ``ConfigurableClassData`` of the ``storage`` section.
            config_value: mapping with ``postgres_url`` or ``postgres_db`` (``hostname``,
                ``port``, ``username``, ``password``, ``db_name``, optional ``params``,
                ``scheme``) and optional ``should_autocreate_tables`` (default True).

        Raises:
            as ``__init__``; ``dagster._check.CheckError`` from ``pg_url_from_config`` when the
            config has both or neither of ``postgres_url`` and ``postgres_db``.
        """
        return cls(
            pg_url_from_config(config_value),
            config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
        )


def remember_true(probe: Callable[..., bool]) -> Callable[..., bool]:
    """``probe`` (positional arguments only) answering True from memory once it said True for
    the same arguments."""
    known: set[tuple] = set()

    @functools.wraps(probe)
    def remembered(*args: Any) -> bool:
        if args in known:
            return True
        answer = probe(*args)
        if answer:
            known.add(args)
        return answer

    return remembered


def pooled_engine(postgres_url: str) -> Engine:
    """A ``QueuePool`` engine with ``POOL_SETTINGS``.

    Raises:
        sqlalchemy.exc.ArgumentError: ``postgres_url`` is not a SQLAlchemy URL (nothing connects
            until first use).
    """
    return create_pg_engine(postgres_url, None, **POOL_SETTINGS)


def _tables(engine: Engine) -> set[str]:
    """Table names in the database's default schema (dagster-postgres' retries on connect)."""
    return set(retry_pg_connection_fn(lambda: db.inspect(engine).get_table_names()))


def _ping_on_checkout(dbapi_connection, connection_record, connection_proxy) -> None:
    """SQLAlchemy's pessimistic disconnect handling: a pooled connection the server dropped
    raises ``DisconnectionError``, so the pool replaces it before the caller uses it."""
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except psycopg2.Error as exc:
        raise DisconnectionError() from exc


def _checked_webserver_engine(storage: Any) -> Callable[[int, int, int], None]:
    """``storage.optimize_for_webserver``, whose engine is then checked before each use too.

    dagster-webserver calls ``optimize_for_webserver`` on each of the three storages (not on
    this class): dagster-postgres then builds an engine that holds one connection, with a
    statement timeout and no check. After a PostgreSQL restart the webserver's next call on
    each storage failed, so a launch could create its run and fail to enqueue it, leaving the
    run ``NOT_STARTED`` for good (the monitor state counts that as in flight). RELIABILITY.md,
    PostgreSQL restart.
    """
    original = storage.optimize_for_webserver

    def optimize_for_webserver(statement_timeout: int, pool_recycle: int, max_overflow: int):
        original(statement_timeout, pool_recycle, max_overflow)
        event.listen(storage._engine, "checkout", _ping_on_checkout)

    return optimize_for_webserver
