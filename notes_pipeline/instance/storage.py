"""dagster-postgres storage that reuses its connections.

``DagsterPostgresStorage`` builds its run, event-log and schedule storages on SQLAlchemy
``NullPool`` engines: every storage call opens a new PostgreSQL connection (TCP, SCRAM
authentication, a new backend process). A migrate_cid run makes ~250 storage calls, so with 130
CIDs per backfill that handshake becomes most of the run time (BENCHMARKS.md). This subclass
gives each storage a small ``QueuePool`` in every process, the way dagster-webserver already
does for itself (``optimize_for_webserver``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster._config.config_schema import UserConfigSchema
from dagster._core.storage.config import pg_config
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import create_pg_engine, pg_url_from_config

# One connection kept per storage; threads (daemon workers, submit pools) get overflow ones.
# pre_ping replaces a connection the server dropped (restart, idle timeout) before it is used.
POOL_SETTINGS: Mapping[str, Any] = {
    "isolation_level": "AUTOCOMMIT",
    "pool_size": 1,
    "max_overflow": 10,
    "pool_recycle": 300,
    "pool_pre_ping": True,
}


class PooledPostgresStorage(DagsterPostgresStorage):
    """``DagsterPostgresStorage`` whose three storages keep pooled connections."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data=inst_data)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            storage._engine.dispose()
            storage._engine = create_pg_engine(postgres_url, None, **POOL_SETTINGS)

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return pg_config()

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledPostgresStorage:
        return cls(
            pg_url_from_config(config_value),
            config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
        )
