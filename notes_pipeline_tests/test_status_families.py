"""A run in flight marks only its own family's CID status as in progress."""

import dagster as dg
import pytest

from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.status import StatusAssets, cid_status
from notes_pipeline.core.vocabulary import MonitorState

NOTES = StatusAssets("notes", dg.AssetKey("notes_load"), dg.AssetKey("notes_report"))
LOGS = StatusAssets("activity_logs", dg.AssetKey("logs_load"), dg.AssetKey("logs_report"))


def _asset(name: str, deps: tuple[str, ...] = ()) -> dg.AssetsDefinition:
    @dg.asset(name=name, partitions_def=cid_partitions, deps=list(deps))
    def _materialize() -> None:
        return None

    return _materialize


ASSETS = [
    _asset("notes_load"),
    _asset("notes_report", ("notes_load",)),
    _asset("logs_load"),
    _asset("logs_report", ("logs_load",)),
]
DEFS = dg.Definitions(
    assets=ASSETS,
    jobs=[
        dg.define_asset_job("notes_job", ["notes_load", "notes_report"]),
        dg.define_asset_job("logs_job", ["logs_load", "logs_report"]),
        dg.define_asset_job("both_job", dg.AssetSelection.assets(*ASSETS)),
    ],
)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("cid", ["4242", "7"])
        yield inst


def start(instance, job: str, asset_selection=None, tags=None) -> dg.DagsterRun:
    return instance.create_run_for_job(
        job_def=DEFS.resolve_job_def(job),
        tags=tags or {"dagster/partition": "4242"},
        status=dg.DagsterRunStatus.STARTED,
        asset_selection=asset_selection,
    )


def states(instance) -> tuple[MonitorState, MonitorState]:
    return (
        cid_status(instance, "4242", NOTES).status,
        cid_status(instance, "4242", LOGS).status,
    )


def test_a_job_run_of_one_family_leaves_the_other_as_it_was(instance):
    assert states(instance) == (MonitorState.NOT_STARTED, MonitorState.NOT_STARTED)
    start(instance, "notes_job")
    assert states(instance) == (MonitorState.IN_PROGRESS, MonitorState.NOT_STARTED)


def test_a_run_of_both_families_marks_both(instance):
    start(instance, "both_job")
    assert states(instance) == (MonitorState.IN_PROGRESS, MonitorState.IN_PROGRESS)


def test_an_asset_selection_decides_which_family(instance):
    start(instance, "both_job", asset_selection=frozenset({dg.AssetKey("logs_load")}))
    assert states(instance) == (MonitorState.NOT_STARTED, MonitorState.IN_PROGRESS)


def test_an_asset_backfill_run_of_the_cid_counts(instance):
    """Asset-backfill runs carry a partition range (start = end = the CID), not the partition
    tag."""
    other = {"dagster/asset_partition_range_start": "7", "dagster/asset_partition_range_end": "7"}
    start(instance, "logs_job", tags=other)
    assert states(instance) == (MonitorState.NOT_STARTED, MonitorState.NOT_STARTED)
    mine = {
        "dagster/asset_partition_range_start": "4242",
        "dagster/asset_partition_range_end": "4242",
    }
    start(instance, "logs_job", tags=mine)
    assert states(instance) == (MonitorState.NOT_STARTED, MonitorState.IN_PROGRESS)


def test_an_empty_asset_selection_falls_back_to_the_plan(instance):
    """An in-process ``materialize`` stores an empty selection: its steps decide."""
    start(instance, "notes_job", asset_selection=frozenset())
    assert states(instance) == (MonitorState.IN_PROGRESS, MonitorState.NOT_STARTED)
