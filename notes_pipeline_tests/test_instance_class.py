"""``NotesPipelineInstance``: dagster.yaml's ``backfill_daemon_interval_seconds`` reaches the
backfill daemon's loop (a private Dagster constant, pinned here to Dagster 1.13)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import dagster._daemon.controller as daemon_controller
import pytest
import yaml
from dagster import DagsterInstance, DagsterInvalidConfigError
from dagster._daemon.backfill import execute_backfill_iteration_loop
from dagster._daemon.daemon import SpanMarker

from notes_pipeline.instance.instance import (
    STOCK_DAEMON_INTERVAL_SECONDS,
    NotesPipelineInstance,
    set_backfill_daemon_interval,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PINNED = (
    "dagster private API changed: dagster._daemon.backfill.execute_backfill_iteration_loop no "
    "longer waits dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS between passes; "
    "update notes_pipeline/instance/instance.py or drop instance_class from dagster.yaml"
)


@pytest.fixture(autouse=True)
def _restore_interval():
    before = daemon_controller.DEFAULT_DAEMON_INTERVAL_SECONDS
    yield
    daemon_controller.DEFAULT_DAEMON_INTERVAL_SECONDS = before


def instance_from_yaml(home: Path, extra: dict) -> DagsterInstance:
    """A sqlite instance in ``home`` whose dagster.yaml names NotesPipelineInstance."""
    config = {
        "instance_class": {
            "module": "notes_pipeline.instance.instance",
            "class": "NotesPipelineInstance",
        },
        "telemetry": {"enabled": False},
        **extra,
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return DagsterInstance.from_config(str(home))


class RecordingEvent:
    """Stands in for the daemon's shutdown event: records how long the loop would sleep."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return False


def first_sleep_of_backfill_loop(instance: DagsterInstance) -> float:
    """Run one pass of Dagster's backfill loop (no backfills) and return the sleep that follows."""
    event = RecordingEvent()
    loop = execute_backfill_iteration_loop(
        SimpleNamespace(instance=instance), logging.getLogger("test"), event
    )
    for item in loop:
        if event.waits:
            break
        assert item is None or isinstance(item, SpanMarker), item
    loop.close()
    return event.waits[0]


def test_the_configured_interval_is_the_backfill_loops_sleep(tmp_path):
    with instance_from_yaml(tmp_path, {"backfill_daemon_interval_seconds": 3}) as instance:
        assert isinstance(instance, NotesPipelineInstance)
        sleep = first_sleep_of_backfill_loop(instance)
    assert 0 < sleep <= 3, PINNED


def test_without_the_key_the_loop_keeps_dagsters_interval(tmp_path):
    with instance_from_yaml(tmp_path, {}) as instance:
        sleep = first_sleep_of_backfill_loop(instance)
    assert STOCK_DAEMON_INTERVAL_SECONDS == 30
    assert 3 < sleep <= 30


def test_auto_materialize_keeps_its_own_interval(tmp_path):
    with instance_from_yaml(tmp_path, {"backfill_daemon_interval_seconds": 2}) as instance:
        assert instance.auto_materialize_minimum_interval_seconds == 30
    extra = {
        "backfill_daemon_interval_seconds": 2,
        "auto_materialize": {"minimum_interval_seconds": 45},
    }
    with instance_from_yaml(tmp_path, extra) as instance:
        assert instance.auto_materialize_minimum_interval_seconds == 45


def test_the_instance_survives_its_ref(tmp_path):
    """Run workers rebuild the instance from its ref: same class, same interval."""
    with instance_from_yaml(tmp_path, {"backfill_daemon_interval_seconds": 4}) as instance:
        ref = instance.get_ref()
    daemon_controller.DEFAULT_DAEMON_INTERVAL_SECONDS = 30
    with DagsterInstance.from_ref(ref) as rebuilt:
        assert isinstance(rebuilt, NotesPipelineInstance)
    assert daemon_controller.DEFAULT_DAEMON_INTERVAL_SECONDS == 4


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "5"])
def test_an_interval_below_one_second_or_not_an_int_is_refused(bad):
    with pytest.raises(ValueError, match="backfill_daemon_interval_seconds"):
        set_backfill_daemon_interval(bad)


@pytest.mark.parametrize("bad", [{"env": "BACKFILL_INTERVAL"}, "5", None])
def test_dagster_refuses_anything_but_an_int_when_it_loads_the_yaml(tmp_path, bad, monkeypatch):
    monkeypatch.setenv("BACKFILL_INTERVAL", "5")
    with pytest.raises(DagsterInvalidConfigError):
        instance_from_yaml(tmp_path, {"backfill_daemon_interval_seconds": bad})


def test_project_dagster_yaml_names_the_class_and_a_short_interval():
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert config["instance_class"] == {
        "module": "notes_pipeline.instance.instance",
        "class": "NotesPipelineInstance",
    }
    assert 1 <= config["backfill_daemon_interval_seconds"] <= 10
