"""One run per CID at a time: the run-queue limit of ``dagster.yaml`` (the RFC's per-CID lock).

``dagster.yaml`` configures a ``QueuedRunCoordinator`` whose ``tag_concurrency_limits`` allow one
in-progress run per unique ``dagster/partition`` value (job runs) and per unique
``dagster/asset_partition_range_start`` value (asset-backfill runs, one CID each). This test
submits runs of the job
``migrate_cid`` the way the UI does (the webserver's ``launchPipelineExecution`` GraphQL mutation,
executed in-process against the same workspace) and drives the queue daemon's dequeue logic
(``QueuedRunCoordinatorDaemon.run_iteration``) itself, one iteration at a time.

The queue runs on a throw-away instance (temporary DAGSTER_HOME, SQLite storage) whose
``run_coordinator`` and ``run_launcher`` sections are copied verbatim from the project's
``dagster.yaml``: a dequeue
iteration launches *every* queued run it may, so running it against the shared stack instance
would launch (or be raced by) other sessions' runs. A separate test checks that the stack
instance (DAGSTER_HOME from .stack/env) loads the very same queue configuration.

The dequeued runs really execute (PreforkRunLauncher, code from workspace.yaml) against the
local stack for two fixture accounts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from crm_fixtures import FixtureNote, FixtureOrg, install
from dagster._core.events import DagsterEventType
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from dagster_graphql.test.utils import execute_dagster_graphql
from pipeline_harness import cdp_db

from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.status import FORCE_RERUN_TAG

pytestmark = pytest.mark.stack

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCATION = "notes_pipeline.definitions"
REPOSITORY = "__repository__"
JOB = "migrate_cid"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
CID_A, CID_B = "990303", "990304"
RUN_TIMEOUT_S = 180.0
POLL_S = 0.5

LAUNCH_MUTATION = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status tags { key value } } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
  }
}
"""


def project_queue_config() -> dict:
    """The `run_coordinator` section of the project's dagster.yaml, as written."""
    return yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())["run_coordinator"]


def expected_partition_limits() -> list[dict]:
    return [
        {"key": tag, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        for tag in (PARTITION_TAG, RANGE_START_TAG)
    ]


@pytest.fixture(scope="module")
def fixture_orgs() -> Iterator[list[FixtureOrg]]:
    db = cdp_db()
    orgs = []
    for cid in (CID_A, CID_B):
        base = int(cid) * 1000
        org = FixtureOrg(int(cid), [FixtureNote(base + i, person_id=1) for i in (1, 2, 3)], {1})
        install(org, db)
        db.contact_notes.delete_many({"company_sso_id": org.company_sso_id})
        orgs.append(org)
    yield orgs
    for org in orgs:
        db.contact_notes.delete_many({"company_sso_id": org.company_sso_id})


@pytest.fixture(scope="module")
def queue_instance(tmp_path_factory) -> Iterator[dg.DagsterInstance]:
    home = tmp_path_factory.mktemp("dagster_home_run_queue")
    project = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    config = {key: project[key] for key in ("run_coordinator", "run_launcher", "telemetry")}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    instance = dg.DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions(cid_partitions.name, [CID_A, CID_B])
    yield instance
    instance.dispose()


@pytest.fixture(scope="module")
def workspace(queue_instance, fixture_orgs) -> Iterator[WorkspaceProcessContext]:
    """The workspace.yaml code location, served by a code server this fixture owns."""
    saved = os.environ.get("NOTES_PIPELINE_ENABLED_CIDS")
    os.environ["NOTES_PIPELINE_ENABLED_CIDS"] = f"{CID_A},{CID_B}"  # inherited by the code server
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)  # workspace.yaml's working_directory "." is the repository root
    try:
        context = WorkspaceProcessContext(
            queue_instance, WorkspaceFileTarget(paths=[str(REPO_ROOT / "workspace.yaml")])
        )
    finally:
        os.chdir(cwd)
    try:
        with context:
            request = context.create_request_context()
            assert not request.code_location_errors(), request.code_location_errors()
            assert request.has_code_location(LOCATION), request.code_location_names()
            yield context
    finally:
        if saved is None:
            os.environ.pop("NOTES_PIPELINE_ENABLED_CIDS", None)
        else:
            os.environ["NOTES_PIPELINE_ENABLED_CIDS"] = saved


def cid_tags(cid: str, style: str) -> list[dict[str, str]]:
    """The tags naming a run's CID: a job run's partition tag, or an asset-backfill run's
    one-CID partition range."""
    if style == "partition":
        return [{"key": PARTITION_TAG, "value": cid}]
    return [{"key": RANGE_START_TAG, "value": cid}, {"key": RANGE_END_TAG, "value": cid}]


def submit(
    workspace: WorkspaceProcessContext,
    cid: str,
    *,
    force_rerun: bool = False,
    style: str = "partition",
) -> str:
    """Launch `migrate_cid` for one CID partition as the UI does (``style`` "range": as an
    asset backfill's run, with a partition range of that one CID); returns the run id.
    ``force_rerun`` adds the tag that lets a completed_success CID load again."""
    tags = cid_tags(cid, style)
    if force_rerun:
        tags.append({"key": FORCE_RERUN_TAG, "value": "true"})
    result = execute_dagster_graphql(
        workspace.create_request_context(),
        LAUNCH_MUTATION,
        variables={
            "executionParams": {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": REPOSITORY,
                    "jobName": JOB,
                },
                "runConfigData": {},
                "executionMetadata": {"tags": tags},
            }
        },
    )
    assert not result.errors, result.errors
    launched = result.data["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run = launched["run"]
    assert all(tag in run["tags"] for tag in cid_tags(cid, style))
    return run["runId"]


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def dequeue_once(daemon: QueuedRunCoordinatorDaemon, workspace: WorkspaceProcessContext) -> None:
    list(daemon.run_iteration(workspace))


def event_time(instance: dg.DagsterInstance, run_id: str, event: DagsterEventType) -> float:
    records = instance.get_records_for_run(run_id, of_type=event).records
    assert records, f"run {run_id} has no {event.value} event"
    return records[0].timestamp


def wait_finished(instance, run_ids, daemon=None, workspace=None) -> None:
    """Poll (bounded) until every run is finished; optionally dequeue between polls."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        if daemon is not None:
            dequeue_once(daemon, workspace)
        runs = {run_id: instance.get_run_by_id(run_id) for run_id in run_ids}
        if all(run.is_finished for run in runs.values()):
            return
        if time.monotonic() > deadline:
            statuses = {run_id: run.status.value for run_id, run in runs.items()}
            pytest.fail(f"runs not finished within {RUN_TIMEOUT_S}s: {statuses}")
        time.sleep(POLL_S)


@pytest.fixture
def run_ids(queue_instance) -> Iterator[list[str]]:
    """Run ids a test creates; cancelled if still queued/running, then deleted."""
    ids: list[str] = []
    yield ids
    for run_id in ids:
        run = queue_instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            queue_instance.run_coordinator.cancel_run(run_id)
    wait_finished(queue_instance, ids)
    for run_id in ids:
        queue_instance.delete_run(run_id)
    if ids:
        assert not queue_instance.get_runs(dg.RunsFilter(run_ids=ids))


def test_the_stack_instance_queues_runs_with_one_run_per_partition():
    """DAGSTER_HOME of the stack loads dagster.yaml's queue: the limit is what the UI gets."""
    instance = dg.DagsterInstance.get()
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    queue = instance.get_concurrency_config().run_queue_config
    assert queue is not None
    assert queue.tag_concurrency_limits == expected_partition_limits()
    assert (
        queue.tag_concurrency_limits == project_queue_config()["config"]["tag_concurrency_limits"]
    )


@pytest.mark.parametrize("style", ["partition", "range"])
def test_second_run_of_a_cid_waits_for_the_first(
    queue_instance: dg.DagsterInstance,
    workspace: WorkspaceProcessContext,
    run_ids: list[str],
    style: str,
):
    """Job runs (partition tag) and asset-backfill runs (one-CID range tags) alike."""
    queue = queue_instance.get_concurrency_config().run_queue_config
    assert isinstance(queue_instance.run_coordinator, QueuedRunCoordinator)
    assert queue.tag_concurrency_limits == expected_partition_limits()
    # there are free slots for all three runs: only the per-CID tag limit can hold A2 back
    assert queue.max_concurrent_runs >= 3

    # force_rerun: A1 (or the other style's runs before) completes the CID; deliberate re-runs
    a1 = submit(workspace, CID_A, force_rerun=True, style=style)
    run_ids.append(a1)
    a2 = submit(workspace, CID_A, force_rerun=True, style=style)
    run_ids.append(a2)
    b1 = submit(workspace, CID_B, force_rerun=True, style=style)
    run_ids.append(b1)
    assert [status(queue_instance, r) for r in (a1, a2, b1)] == [dg.DagsterRunStatus.QUEUED] * 3

    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    with daemon:
        dequeue_once(daemon, workspace)
        # the other CID's run is dequeued next to A1; the second run of CID A stays queued
        assert status(queue_instance, a1) != dg.DagsterRunStatus.QUEUED
        assert status(queue_instance, b1) != dg.DagsterRunStatus.QUEUED
        assert status(queue_instance, a2) == dg.DagsterRunStatus.QUEUED
        assert status(queue_instance, a1) in {
            *IN_PROGRESS_RUN_STATUSES,
            dg.DagsterRunStatus.SUCCESS,
        }

        # keep dequeuing while the runs execute: A2 may only start once A1 has ended
        wait_finished(queue_instance, [a1, a2, b1], daemon, workspace)

    runs = {r: queue_instance.get_run_by_id(r) for r in (a1, a2, b1)}
    assert {r.status for r in runs.values()} == {dg.DagsterRunStatus.SUCCESS}, {
        r: run.status for r, run in runs.items()
    }
    a1_ended = queue_instance.get_run_record_by_id(a1).end_time
    a2_dequeued = event_time(queue_instance, a2, DagsterEventType.RUN_STARTING)
    b1_dequeued = event_time(queue_instance, b1, DagsterEventType.RUN_STARTING)
    assert a1_ended is not None
    assert a2_dequeued >= a1_ended, "the second run of CID A was dequeued while A1 was running"
    assert b1_dequeued < a1_ended, "the other CID's run had to wait for CID A"

    notes = cdp_db().contact_notes
    for cid in (CID_A, CID_B):
        assert notes.count_documents({"company_sso_id": f"company-{cid}"}) == 3
