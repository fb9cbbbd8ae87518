"""EXPERIMENT ONLY (``full_backfill.py --pooled-storage``): dagster-postgres with pooled engines.

dagster-postgres builds its run/event/schedule storages with ``NullPool``: every storage call
opens a new PostgreSQL connection (TCP + SCRAM-SHA-256 + backend start, ~11 ms wall and
~3.4 ms client CPU here, plus the server side). A small migrate_cid run makes ~250 of them.
This subclass keeps one pooled connection per storage per process (``pool_size=1``, a few
overflow connections for threads), the way dagster-webserver already does through
``optimize_for_webserver``.

It is used through ``storage: custom:`` in a generated dagster.yaml; the benchmark puts this
directory on PYTHONPATH of the daemon/webserver (and so of the code servers and run workers).
Not part of the product: it measures what connection reuse would buy.
"""

from __future__ import annotations

from typing import Any

from dagster._config.config_schema import UserConfigSchema
from dagster._core.storage.config import pg_config
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import create_pg_engine, pg_url_from_config

POOL_KWARGS: dict[str, Any] = {
    "isolation_level": "AUTOCOMMIT",
    "pool_size": 1,
    "max_overflow": 4,
    "pool_recycle": 300,
    "pool_pre_ping": True,
}


class PooledDagsterPostgresStorage(DagsterPostgresStorage):
    """DagsterPostgresStorage whose three storages reuse connections (QueuePool)."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data=inst_data)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            storage._engine.dispose()
            storage._engine = create_pg_engine(postgres_url, None, **POOL_KWARGS)

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return pg_config()

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledDagsterPostgresStorage:
        return cls(
            pg_url_from_config(config_value),
            config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
        )
