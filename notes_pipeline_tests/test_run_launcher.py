"""PreforkRunLauncher: runs forked from the zygote, terminated, and health-checked.

The launcher is built from the ``run_launcher`` section of the project's ``dagster.yaml`` on a
throw-away instance (temporary DAGSTER_HOME, SQLite storage), and launches the small jobs of
``launcher_jobs``; the end-to-end path through the queue daemon is in ``test_run_queue``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import launcher_jobs
import pytest
import yaml
from dagster._core.launcher.base import LaunchRunContext, WorkerStatus

from notes_pipeline.instance.run_launcher import (
    RUN_WORKER_PID_TAG,
    PreforkRunLauncher,
    _process_alive,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
WAIT_LIMIT_S = 120.0
POLL_S = 0.05


def project_launcher_config() -> dict:
    return yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())["run_launcher"]


@pytest.fixture(scope="module")
def instance(tmp_path_factory) -> Iterator[dg.DagsterInstance]:
    home = tmp_path_factory.mktemp("dagster_home_launcher")
    config = {"run_launcher": project_launcher_config(), "telemetry": {"enabled": False}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    instance = dg.DagsterInstance.from_config(str(home))
    yield instance
    instance.dispose()


def launch(
    instance: dg.DagsterInstance,
    job: dg.JobDefinition,
    directory: Path,
    launcher: PreforkRunLauncher | None = None,
) -> str:
    run = instance.create_run_for_job(
        job_def=job,
        run_config={"ops": {job.nodes[0].name: {"config": {"directory": str(directory)}}}},
        job_code_origin=dg.build_reconstructable_job(
            "notes_pipeline_tests.launcher_jobs",
            "job_named",
            reconstructable_args=(job.name,),
            reconstructor_working_directory=str(REPO_ROOT),
        ).get_python_origin(),
    )
    if launcher is None:
        instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    else:
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    return run.run_id


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def worker_pids(directory: Path) -> tuple[int, int]:
    """(run worker pid, its parent's pid) as written by ``launcher_jobs.record_worker``."""
    worker_pid, parent_pid = map(int, (directory / "worker.txt").read_text().split())
    return worker_pid, parent_pid


def finished_run(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    wait_until(lambda: instance.get_run_by_id(run_id).is_finished, f"run {run_id} to finish")
    return instance.get_run_by_id(run_id)


def test_the_project_configures_the_prefork_launcher(instance):
    assert isinstance(instance.run_launcher, PreforkRunLauncher)
    assert "notes_pipeline.definitions" in project_launcher_config()["config"]["preload_modules"]


def test_a_run_is_forked_from_the_zygote_and_succeeds(instance, tmp_path):
    run_id = launch(instance, launcher_jobs.record_worker_job, tmp_path)
    run = finished_run(instance, run_id)

    assert run.status == dg.DagsterRunStatus.SUCCESS
    worker_pid, parent_pid = worker_pids(tmp_path)
    assert run.tags[RUN_WORKER_PID_TAG] == str(worker_pid)
    zygote = instance.run_launcher._zygote._process
    assert zygote is not None and zygote.poll() is None
    assert parent_pid == zygote.pid  # forked, not spawned by this process
    started = [
        e.message
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if "Started process for run" in (e.message or "")
    ]
    assert started == [f"Started process for run (pid: {worker_pid})."]


def test_the_zygote_is_reused_and_restarted_when_gone(instance, tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    run = finished_run(instance, launch(instance, launcher_jobs.record_worker_job, first))
    assert run.status == dg.DagsterRunStatus.SUCCESS
    zygote_pid = instance.run_launcher._zygote._process.pid
    second = tmp_path / "second"
    second.mkdir()
    finished_run(instance, launch(instance, launcher_jobs.record_worker_job, second))
    assert worker_pids(second)[1] == zygote_pid

    os.kill(zygote_pid, signal.SIGKILL)
    instance.run_launcher._zygote._process.wait()
    third = tmp_path / "third"
    third.mkdir()
    run = finished_run(instance, launch(instance, launcher_jobs.record_worker_job, third))
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert worker_pids(third)[1] != zygote_pid


def test_a_zygote_that_dies_mid_request_is_replaced(instance, tmp_path):
    """The zygote reads the request, then exits without answering: the launch still succeeds."""
    zygote = instance.run_launcher._zygote
    zygote.close()
    zygote._process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.readline()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    dying = zygote._process
    run = finished_run(instance, launch(instance, launcher_jobs.record_worker_job, tmp_path))
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert dying.returncode is not None
    parent = worker_pids(tmp_path)[1]
    assert parent == zygote._process.pid != dying.pid


def test_a_changed_source_file_retires_the_zygote(instance, tmp_path, monkeypatch):
    """Runs execute the code on disk: an edit after the zygote imported it means a new zygote."""
    probe = tmp_path / "zygote_probe_module.py"
    probe.write_text("VERSION = 1\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    launcher = PreforkRunLauncher(preload_modules=["dagster", "zygote_probe_module"])
    launcher.register_instance(instance)
    try:
        parents = []
        for version in (1, 1, 2):
            if version == 2:
                probe.write_text("VERSION = 2\n")
                stat = probe.stat()
                os.utime(probe, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
            directory = tmp_path / f"run{len(parents)}"
            directory.mkdir()
            run_id = launch(instance, launcher_jobs.record_worker_job, directory, launcher)
            assert finished_run(instance, run_id).status == dg.DagsterRunStatus.SUCCESS
            parents.append(worker_pids(directory)[1])
        assert parents[0] == parents[1]  # same zygote while nothing changed
        assert parents[2] != parents[0]  # the edit retired it
        assert not _process_alive(parents[0])
    finally:
        launcher.dispose()


def test_terminate_cancels_a_running_run(instance, tmp_path):
    run_id = launch(instance, launcher_jobs.wait_for_release_job, tmp_path)
    wait_until(lambda: (tmp_path / "started").exists(), "the step to start")
    run = instance.get_run_by_id(run_id)
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING

    assert instance.run_launcher.terminate(run_id) is True
    run = finished_run(instance, run_id)
    assert run.status == dg.DagsterRunStatus.CANCELED
    assert not (tmp_path / "release").exists()
    assert instance.run_launcher.terminate(run_id) is False  # finished runs are left alone


def test_health_check_reports_a_worker_that_died(instance, tmp_path):
    run_id = launch(instance, launcher_jobs.wait_for_release_job, tmp_path)
    wait_until(lambda: (tmp_path / "started").exists(), "the step to start")
    pid = int(instance.get_run_by_id(run_id).tags[RUN_WORKER_PID_TAG])

    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _process_alive(pid), "the worker to be gone")
    health = instance.run_launcher.check_run_worker_health(instance.get_run_by_id(run_id))
    assert health.status == WorkerStatus.FAILED
    assert str(pid) in (health.msg or "")
    instance.report_run_failed(instance.get_run_by_id(run_id))


def test_health_check_without_a_pid_is_unknown(instance):
    run = instance.create_run_for_job(
        job_def=launcher_jobs.record_worker_job,
        run_config={"ops": {"record_worker": {"config": {"directory": "/nonexistent"}}}},
    )
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.UNKNOWN
    assert instance.run_launcher.terminate(run.run_id) is False


def test_process_alive_tells_running_from_gone():
    assert _process_alive(os.getpid())
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    assert not _process_alive(child)


def test_process_alive_counts_an_exiting_process_as_gone(monkeypatch):
    """While a killed worker exits, reading its /proc stat fails with ESRCH although
    ``kill(pid, 0)`` still succeeds: that is a worker run monitoring must fail, not RUNNING."""
    import builtins

    real_open = builtins.open

    def exiting_stat(path, *args, **kwargs):
        if str(path) == f"/proc/{os.getpid()}/stat":
            raise ProcessLookupError(3, "No such process")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", exiting_stat)
    assert not _process_alive(os.getpid())
