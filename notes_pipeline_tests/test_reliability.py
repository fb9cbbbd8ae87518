"""Issue #12 item 3 in the suite: the cheaper faults, each followed by a re-run and the checks
"0 duplicates, 0 lost, counts add up, status right" (``devtools.faults.check_cid``); and the
two product bugs the faults found (counts under two writers; the webserver's storage after a
PostgreSQL restart).

* ``kill -9`` of the run worker at random points of the load, 10 times on one CID;
* two run workers loading the same CID at once (bypassing the run queue): one copy per note,
  and each insert counted once (migrated by one run, skipped by the other);
* the stack's MongoDB server (FerretDB) restarted during a load.

Runs are real: ``migrate_cid`` launched through GraphQL (``launchPipelineExecution``, as the UI
does) on an instance whose run coordinator is Dagster's default, so each launch goes straight
to the project's ``PreforkRunLauncher`` (no queue) and forks a run worker; the instance
stores runs in this session's PostgreSQL database. What the run-monitoring daemon does for a
dead worker (health check, then fail the run) the test does itself. The other faults
(PostgreSQL restart, S3 outage, daemon restart, repeated full backfills) run in
``benchmarks/reliability.py``; figures in RELIABILITY.md.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import boto3
import dagster as dg
import psycopg2
import pytest
import yaml
from crm_fixtures import PNG, FixtureNote, FixtureOrg, install_fresh
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster_graphql.test.utils import execute_dagster_graphql
from pipeline_harness import cdp_db

from devtools import faults
from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.status import FORCE_RERUN_TAG
from notes_pipeline.instance.run_launcher import PreforkRunLauncher

pytestmark = pytest.mark.stack

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCATION = "notes_pipeline.definitions"
KILL_CID, CONCURRENT_CID, MONGO_CID = "990801", "990802", "990803"
KILL_ROUNDS = 10
NOTES_TWICE = 300
RUN_TIMEOUT_S = 180.0

LAUNCH_MUTATION = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def org(cid: str, notes: int, *, images: bool = False, unmapped: int = 0) -> FixtureOrg:
    """``notes`` Person notes (the last ``unmapped`` of them on an unmapped contact, so they
    fail CONTACT_NOT_MAPPED) and two out-of-scope ones; one PNG each with ``images``."""
    base = int(cid) * 1000
    made = [
        FixtureNote(
            base + i,
            person_id=2 if i > notes - unmapped else 1,
            html=f"<p>note {i}</p>",
            images=[(base + i, f"p{i}.png", PNG, "image/png")] if images else [],
        )
        for i in range(1, notes + 1)
    ]
    made.append(FixtureNote(base + 900, deal_id=7))  # NOT_PERSON_NOTE
    made.append(FixtureNote(base + 901, person_id=1, note_type_id=2))  # NOTE_TYPE_EXCLUDED
    return FixtureOrg(cid=int(cid), notes=made, mapped_person_ids={1})


@pytest.fixture(scope="module")
def instance(tmp_path_factory) -> Iterator[dg.DagsterInstance]:
    """The project's storage (this session's database) and run launcher, no run queue."""
    home = tmp_path_factory.mktemp("dagster_home_reliability")
    project = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    config = {k: project[k] for k in ("storage", "run_launcher", "python_logs", "telemetry")}
    # Dagster's default coordinator is the queue: DefaultRunCoordinator launches at once
    config["run_coordinator"] = {
        "module": "dagster.core.run_coordinator",
        "class": "DefaultRunCoordinator",
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    instance = dg.DagsterInstance.from_config(str(home))
    assert isinstance(instance.run_launcher, PreforkRunLauncher)
    instance.add_dynamic_partitions(cid_partitions.name, [KILL_CID, CONCURRENT_CID, MONGO_CID])
    yield instance
    instance.dispose()  # stops this module's zygote


@pytest.fixture(scope="module")
def workspace(instance) -> Iterator[WorkspaceProcessContext]:
    """workspace.yaml's code location; the flag is on for the three CIDs (inherited by the
    code server and by the zygote the first launch starts)."""
    saved = os.environ.get("NOTES_PIPELINE_ENABLED_CIDS")
    os.environ["NOTES_PIPELINE_ENABLED_CIDS"] = f"{KILL_CID},{CONCURRENT_CID},{MONGO_CID}"
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        context = WorkspaceProcessContext(
            instance, WorkspaceFileTarget(paths=[str(REPO_ROOT / "workspace.yaml")])
        )
    finally:
        os.chdir(cwd)
    try:
        with context:
            assert not context.create_request_context().code_location_errors()
            yield context
    finally:
        if saved is None:
            os.environ.pop("NOTES_PIPELINE_ENABLED_CIDS", None)
        else:
            os.environ["NOTES_PIPELINE_ENABLED_CIDS"] = saved


@pytest.fixture(scope="module")
def s3(stack_env):
    return boto3.client("s3", endpoint_url=stack_env["NOTES_PIPELINE_S3_ENDPOINT_URL"])


def launch(workspace, cid: str, batch_size: int, *, force: bool = True) -> str:
    """Launch ``migrate_cid`` for ``cid`` (straight to the run launcher); the run id."""
    tags = [{"key": "dagster/partition", "value": cid}]
    if force:
        tags.append({"key": FORCE_RERUN_TAG, "value": "true"})
    result = execute_dagster_graphql(
        workspace.create_request_context(),
        LAUNCH_MUTATION,
        variables={
            "executionParams": {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": "__repository__",
                    "jobName": "migrate_cid",
                },
                "runConfigData": faults.settings_run_config(batch_size=batch_size),
                "executionMetadata": {"tags": tags},
            }
        },
    )
    assert not result.errors, result.errors
    launched = result.data["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def finish(instance, run_id: str) -> dg.DagsterRun:
    return faults.wait_for(
        lambda: faults.finished_run(instance, run_id), f"run {run_id} to end", RUN_TIMEOUT_S
    )


def check(instance, cid: str, stack_env, s3, expected_status="completed_success"):
    return faults.check_cid(
        instance,
        cid,
        crm_dsn=stack_env["NOTES_PIPELINE_CRM_DSN"],
        notes_collection=cdp_db().contact_notes,
        s3_client=s3,
        expected_status=expected_status,
    )


def loaded(instance, cid: str, run_id: str) -> dict:
    return faults.latest_metadata(instance, "cdp_notes_loaded", cid, run_id)


# --------------------------------------------------------------------------- counts honest
class RacingMongo(CdpMongo):
    """Another writer inserts every note of the call just before this one's bulk write."""

    def upsert_notes(self, company_sso_id, documents, **kwargs):
        self.notes.insert_many(
            [
                {"company_sso_id": company_sso_id, "legacy_crm_note_id": d["legacy_crm_note_id"]}
                for d in documents
            ]
        )
        return super().upsert_notes(company_sso_id, documents, **kwargs)


def test_a_note_another_writer_inserted_meanwhile_is_matched_not_upserted(mongo_db):
    writer = RacingMongo(uri=os.environ["NOTES_PIPELINE_MONGO_URI"], database=mongo_db.name)
    writer.ensure_indexes()
    company = "company-race"
    docs = [{"company_sso_id": company, "legacy_crm_note_id": str(i)} for i in range(5)]
    result = writer.upsert_notes(company, docs)
    assert mongo_db.contact_notes.count_documents({"company_sso_id": company}) == 5
    assert (result.upserted, result.matched, result.errors) == (set(), set(range(5)), {})
    mongo_db.contact_notes.delete_many({"company_sso_id": company})


# --------------------------------------------------------------------------- PostgreSQL restart
def test_the_webservers_storage_outlives_a_postgres_restart(stack_env, tmp_path):
    """What a PostgreSQL restart does to dagster-webserver's held connections (every backend
    of the Dagster database ends), without restarting the server the session uses: the next
    call on each storage still answers. Before the fix the webserver's first launch after a
    restart created its run and failed to enqueue it (a run NOT_STARTED for good)."""
    project = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"storage": project["storage"]}))
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        instance.optimize_for_webserver(statement_timeout=5000, pool_recycle=3600, max_overflow=20)
        calls = {
            "runs": lambda: instance.get_runs(limit=1),
            "events": lambda: instance.all_logs("no-such-run"),
            "schedules": lambda: instance.all_instigator_state(),
        }
        for call in calls.values():
            call()  # each storage now holds its connection
        dsn = (
            f"postgresql://{stack_env['DAGSTER_PG_USER']}:{stack_env['DAGSTER_PG_PASSWORD']}"
            f"@{stack_env['DAGSTER_PG_HOST']}:{stack_env['DAGSTER_PG_PORT']}"
            f"/{stack_env['DAGSTER_PG_DB']}"
        )
        with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert cur.fetchone()[0] >= 3
        for call in calls.values():
            call()  # raised OperationalError (server closed the connection) before the fix
    finally:
        instance.dispose()


# --------------------------------------------------------------------------- kill -9
def failed_health(instance, run_id: str):
    """The launcher's health check of the run's worker if it says FAILED, else None."""
    health = instance.run_launcher.check_run_worker_health(instance.get_run_by_id(run_id))
    return health if health.status.value == "FAILED" else None


def test_kill9_of_the_run_worker_at_random_points_of_the_load(instance, workspace, stack_env, s3):
    """Ten rounds on one CID: load from an empty CDP, SIGKILL the run worker once a random
    number of notes is in CDP (0 = as soon as the load step starts), fail the dead run as run
    monitoring does, re-run. Each re-run skips exactly what the dead worker wrote, migrates the
    rest, and the checks hold."""
    fixture = install_fresh(org(KILL_CID, 30, images=True), cdp_db())
    notes = cdp_db().contact_notes
    ready = 30
    rng = random.Random(12)
    rounds = []
    for round_no in range(KILL_ROUNDS):
        notes.delete_many({"company_sso_id": fixture.company_sso_id})
        target = 0 if round_no == 0 else rng.randrange(1, ready - 4)
        run_id = launch(workspace, KILL_CID, batch_size=2)
        pid = faults.wait_for(
            lambda run_id=run_id: faults.run_worker_pid(instance, run_id), "worker pid", 60
        )
        faults.wait_for(
            lambda run_id=run_id, target=target: (
                faults.step_started(instance, run_id)
                and notes.count_documents({"company_sso_id": fixture.company_sso_id}) >= target
            ),
            f"{target} notes in CDP",
            RUN_TIMEOUT_S,
            interval_s=0.01,
            give_up=lambda run_id=run_id: faults.run_ended(instance, run_id),
        )
        assert faults.kill9(pid), f"round {round_no}: the worker was gone before the kill"
        # run monitoring polls the launcher; the kernel may show the dead worker for a moment
        health = faults.wait_for(
            lambda run_id=run_id: failed_health(instance, run_id),
            f"round {round_no}: the launcher to report the killed worker FAILED",
            30,
        )
        instance.report_run_failed(instance.get_run_by_id(run_id), health.msg)  # = run monitoring
        left = notes.count_documents({"company_sso_id": fixture.company_sso_id})
        assert left < ready, f"round {round_no}: the load had ended before the kill"
        rerun = launch(workspace, KILL_CID, batch_size=2)
        assert finish(instance, rerun).status == dg.DagsterRunStatus.SUCCESS
        meta = loaded(instance, KILL_CID, rerun)
        assert (meta["skipped"], meta["migrated"]) == (left, ready - left), round_no
        result = check(instance, KILL_CID, stack_env, s3)
        assert result.ok, (round_no, result.problems)
        rounds.append(left)
    assert len(rounds) == KILL_ROUNDS
    assert any(0 < left < ready for left in rounds)  # some kills landed mid-load


# --------------------------------------------------------------------------- two writers
def test_two_run_workers_loading_one_cid_keep_one_copy_and_count_each_insert_once(
    instance, workspace, stack_env, s3
):
    """Both workers are held at their first CRM read (the table locked) and released together,
    so they write the same batches at the same time."""
    fixture = install_fresh(org(CONCURRENT_CID, NOTES_TWICE), cdp_db())
    with faults.crm_notes_locked(stack_env["NOTES_PIPELINE_CRM_ADMIN_DSN"]) as waiting:
        first = launch(workspace, CONCURRENT_CID, batch_size=5)
        second = launch(workspace, CONCURRENT_CID, batch_size=5)  # no queue: both run at once
        faults.wait_for(lambda: waiting() >= 2, "both extractions to wait", RUN_TIMEOUT_S)
    runs = [finish(instance, r) for r in (first, second)]
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2
    metas = [loaded(instance, CONCURRENT_CID, r) for r in (first, second)]
    for meta in metas:
        assert meta["migrated"] + meta["skipped"] == NOTES_TWICE
    # each insert counted by the one run that made it
    assert sum(m["migrated"] for m in metas) == NOTES_TWICE, [m["migrated"] for m in metas]
    notes = cdp_db().contact_notes
    assert notes.count_documents({"company_sso_id": fixture.company_sso_id}) == NOTES_TWICE
    result = check(instance, CONCURRENT_CID, stack_env, s3)
    assert result.ok, result.problems


# --------------------------------------------------------------------------- MongoDB restart
def test_mongodb_restarted_during_the_load(
    instance, workspace, stack_env, s3, pre_stack_environ, demo_stack_env
):
    """The stack's FerretDB/mongod restarted (scripts/stack.sh restart mongo) once the load has
    written its first batches; then a re-run. The stack is left up and answering."""
    stack_dir = Path(demo_stack_env["DAGSTER_HOME"]).parent
    if faults.stack_pid("mongo", stack_dir) is None:
        pytest.skip("MongoDB is external (NOTES_PIPELINE_MONGO_URI): not this stack's to restart")
    fixture = install_fresh(org(MONGO_CID, 300), cdp_db())
    notes = cdp_db().contact_notes
    run_id = launch(workspace, MONGO_CID, batch_size=10)
    faults.wait_for(
        lambda: notes.count_documents({"company_sso_id": fixture.company_sso_id}) >= 20,
        "the first batches in CDP",
        RUN_TIMEOUT_S,
        interval_s=0.01,
        give_up=lambda: faults.run_ended(instance, run_id),
    )
    assert faults.finished_run(instance, run_id) is None, "the load ended before the restart"
    faults.stack_service("restart", "mongo", pre_stack_environ)
    first = finish(instance, run_id)
    rerun = launch(workspace, MONGO_CID, batch_size=10)
    assert finish(instance, rerun).status == dg.DagsterRunStatus.SUCCESS
    meta = loaded(instance, MONGO_CID, rerun)
    assert meta["migrated"] + meta["skipped"] == 300
    result = check(instance, MONGO_CID, stack_env, s3)
    assert result.ok, (first.status, result.problems)
    cdp_db().client.admin.command("ping")  # the stack's MongoDB answers again
