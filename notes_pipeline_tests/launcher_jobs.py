"""Jobs run by test_run_launcher through PreforkRunLauncher (a code location of their own)."""

import os
import time
from pathlib import Path

import dagster as dg

RELEASE_WAIT_LIMIT_S = 120.0


class WorkerFiles(dg.Config):
    directory: str


@dg.op
def record_worker(config: WorkerFiles) -> None:
    """Write the run worker's pid and its parent's pid."""
    Path(config.directory, "worker.txt").write_text(f"{os.getpid()} {os.getppid()}")


@dg.op
def wait_for_release(config: WorkerFiles) -> None:
    """Signal that the step started, then wait (bounded) for the test's release file."""
    directory = Path(config.directory)
    (directory / "started").write_text(str(os.getpid()))
    deadline = time.monotonic() + RELEASE_WAIT_LIMIT_S
    while not (directory / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@dg.job(executor_def=dg.in_process_executor)
def record_worker_job():
    record_worker()


@dg.job(executor_def=dg.in_process_executor)
def wait_for_release_job():
    wait_for_release()


def job_named(name: str) -> dg.JobDefinition:
    """Reconstructor for ``dg.build_reconstructable_job`` (run workers import this module)."""
    return {job.name: job for job in (record_worker_job, wait_for_release_job)}[name]
