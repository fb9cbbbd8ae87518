"""``NotesPipelineInstance``: the Dagster instance with a shorter backfill-daemon loop.

Dagster 1.13's backfill daemon looks for new backfills once every 30 s, a fixed interval
(``dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS``, dagster-io/dagster#11649): a
backfill launched from the UI waits up to 30 s before its first run is created, a quarter of the
130-CID ``full`` backfill (BENCHMARKS.md). ``dagster.yaml`` names this class in
``instance_class`` (Dagster's hook for ``DagsterInstance`` subclasses with their own keys) and sets
``backfill_daemon_interval_seconds``; constructing the instance sets that interval for the
process, and the daemon's backfill loop reads it when it starts.

Not a public Dagster API: the loop's interval is a private module constant, pinned to Dagster 1.13
(``notes_pipeline_tests/test_instance_class.py`` fails when the loop stops reading it). The
auto-materialize daemon, whose default interval is the same constant, keeps Dagster's 30 s
unless ``auto_materialize.minimum_interval_seconds`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster._daemon.controller as daemon_controller  # private: the daemons' loop interval
from dagster import DagsterInstance, Field
from dagster._core.instance.ref import InstanceRef  # private: the stock config defaults

# Dagster's own interval (30 s in 1.13), read before any instance changes it.
STOCK_DAEMON_INTERVAL_SECONDS: int = daemon_controller.DEFAULT_DAEMON_INTERVAL_SECONDS


def set_backfill_daemon_interval(seconds: int) -> None:
    """Make this process's backfill daemon wait ``seconds`` (int ≥ 1) between passes.

    Applies to backfill loops started afterwards. Raises ``ValueError`` for seconds < 1.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise ValueError(f"backfill_daemon_interval_seconds must be an int >= 1, got {seconds!r}")
    daemon_controller.DEFAULT_DAEMON_INTERVAL_SECONDS = seconds


class NotesPipelineInstance(DagsterInstance):
    """``DagsterInstance`` plus the ``dagster.yaml`` key ``backfill_daemon_interval_seconds``.

    The key (int seconds ≥ 1, default Dagster's 30) is how long the backfill daemon waits
    between passes; a pass that takes longer is followed by the next at once. Raises
    ``ValueError`` at construction for a value below 1.
    """

    def __init__(
        self,
        *args: Any,
        backfill_daemon_interval_seconds: int = STOCK_DAEMON_INTERVAL_SECONDS,
        **kwargs: Any,
    ) -> None:
        set_backfill_daemon_interval(backfill_daemon_interval_seconds)
        super().__init__(*args, **kwargs)

    @classmethod
    def config_schema(cls) -> Mapping[str, Field]:
        """The dagster.yaml keys this class adds to Dagster's instance schema."""
        return {
            # a plain int: Dagster hands an instance class its keys unprocessed, so an
            # IntSource's {env: NAME} would arrive here as that mapping
            "backfill_daemon_interval_seconds": Field(
                int,
                is_required=False,
                default_value=STOCK_DAEMON_INTERVAL_SECONDS,
                description="Seconds between the backfill daemon's passes (Dagster's: 30).",
            )
        }

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, Any]:
        """Dagster's defaults for the sections dagster.yaml leaves out."""
        return InstanceRef.config_defaults(base_dir)

    @property
    def auto_materialize_minimum_interval_seconds(self) -> int:
        """Seconds between auto-materialize passes: the configured value, else Dagster's 30."""
        configured = super().auto_materialize_minimum_interval_seconds
        return STOCK_DAEMON_INTERVAL_SECONDS if configured is None else configured
