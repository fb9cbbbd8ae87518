"""A run launcher that forks run workers from a pre-imported process instead of spawning them.

Dagster's ``DefaultRunLauncher`` starts every run in a fresh interpreter, which imports
dagster and the code location again: ~1.5 CPU-seconds before the first step, paid 130 times
by a ``full`` backfill on a 2-core machine. ``PreforkRunLauncher`` keeps one zygote process
(``run_worker_zygote``) per launching process, with ``preload_modules`` already imported, and
forks it for each run. The child runs exactly what ``dagster api execute_run`` runs.

The zygote may preload the code location too: before each fork it checks the modification
time of every source file it has imported, and if one changed it exits and a fresh zygote
takes over, so a run always executes the code on disk. A run whose code location uses another
Python (``executable_path``) is started as ``dagster api execute_run`` with that Python.

The run worker's PID is stored in the run tag ``notes_pipeline/run_worker_pid``: ``terminate``
sends it SIGTERM (a Dagster run worker turns that into a clean cancellation), and run monitoring
uses it to notice a worker that died without ending its run.

Not a public Dagster API: the launcher builds ``dagster._grpc.types.ExecuteRunArgs`` and
implements ``dagster._core.launcher.base.RunLauncher`` (with ``LaunchRunContext``,
``CheckRunHealthResult``, ``WorkerStatus``), and the zygote calls the body of ``dagster api
execute_run`` (``dagster._cli.api._execute_run_command_body``), all pinned to Dagster 1.13.
``notes_pipeline_tests/test_private_dagster_apis.py`` fails with a clear message when one of them
changes; the fallback is Dagster's ``DefaultRunLauncher`` (``dagster.stock.yaml``), see
``docs/INSTANCE.md``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

# dagster._* below: private APIs pinned to 1.13 (notes_pipeline_tests/test_private_dagster_apis.py)
from dagster import Array, Field
from dagster import _check as check
from dagster._config.config_schema import UserConfigSchema
from dagster._core.launcher.base import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, serialize_value
from dagster._serdes.config_class import ConfigurableClassData

from notes_pipeline.core.parsing import ascii_int

RUN_WORKER_PID_TAG = "notes_pipeline/run_worker_pid"
DEFAULT_PRELOAD_MODULES = ("dagster", "dagster._cli.api", "dagster_postgres")

log = logging.getLogger(__name__)


class ZygoteError(RuntimeError):
    """The zygote process did not answer as the protocol says."""


class RunWorkerZygote:
    """One ``run_worker_zygote`` child process and its line protocol (thread-safe).

    The process is started lazily by the first ``fork_run`` (``sys.executable -m
    notes_pipeline.instance.run_worker_zygote MODULE...``) and replaced whenever it has exited
    or reports itself stale. Its stdin/stdout carry the protocol; its stderr is inherited.
    """

    def __init__(self, preload_modules: Sequence[str]):
        """Remember the module names (importable dotted paths) the zygote imports at start."""
        self._preload_modules = list(preload_modules)
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def fork_run(self, serialized_args: str) -> int:
        """Fork a run worker for these ``ExecuteRunArgs``; its PID.

        A zygote that is gone, or stale (a source file it imported changed), is replaced once.
        Blocks until the zygote answers: a new zygote first imports ``preload_modules``
        (seconds for a code location), an existing one answers in milliseconds.

        Args:
            serialized_args: ``dagster._serdes.serialize_value(ExecuteRunArgs(...))`` (JSON).

        Returns:
            The PID of the forked run worker (a child of the zygote, not of this process).

        Raises:
            ZygoteError: the zygote exited without answering twice in a row, did not report
                ready after start, or stayed stale after being replaced.
            BrokenPipeError: the replacement zygote closed its stdin too.
            subprocess.TimeoutExpired: a stale zygote did not exit within 10 s.
            OSError: the zygote process could not be started.
        """
        request = json.dumps({"execute_run_args": serialized_args}) + "\n"
        with self._lock:
            for attempt in range(2):
                process = self._running_process()
                assert process.stdin
                try:
                    process.stdin.write(request)
                    process.stdin.flush()
                    reply = self._read_reply(process)
                except (BrokenPipeError, ZygoteError):
                    if attempt:
                        raise
                    process.kill()
                    process.wait()
                    continue
                if "pid" in reply:
                    return int(reply["pid"])
                log.info("run-worker zygote %s: imported source changed; replacing it", process.pid)
                process.wait(timeout=10)
            raise ZygoteError("run-worker zygote stayed stale")

    def close(self) -> None:
        """Close the zygote's stdin and wait (up to 10 s) for it to exit; run workers it forked
        keep running. A later ``fork_run`` starts a new zygote.

        Raises:
            subprocess.TimeoutExpired: the zygote did not exit within 10 s.
        """
        with self._lock:
            if self._process and self._process.poll() is None:
                assert self._process.stdin
                self._process.stdin.close()
                self._process.wait(timeout=10)
            self._process = None

    def _running_process(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            if self._process is not None and self._process.returncode != 0:
                log.warning(
                    "run-worker zygote %s exited with code %s; starting a new one",
                    self._process.pid,
                    self._process.returncode,
                )
            self._process = subprocess.Popen(
                [sys.executable, "-m", "notes_pipeline.instance.run_worker_zygote"]
                + self._preload_modules,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            if not self._read_reply(self._process).get("ready"):
                raise ZygoteError("run-worker zygote did not report ready")
            log.info("run-worker zygote %s started (%s)", self._process.pid, self._preload_modules)
        return self._process

    @staticmethod
    def _read_reply(process: subprocess.Popen) -> dict[str, Any]:
        assert process.stdout
        line = process.stdout.readline()
        if not line:
            raise ZygoteError(f"run-worker zygote exited (code {process.poll()})")
        return json.loads(line)


class PreforkRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run as a fork of a process that has already imported dagster.

    Configured in ``dagster.yaml`` as ``run_launcher: {module:
    notes_pipeline.instance.run_launcher, class: PreforkRunLauncher, config: {preload_modules:
    [...]}}``. Each process that launches runs (daemon, webserver, ``dagster dev``) owns one
    zygote. Runs whose code location uses another Python are started as ``dagster api
    execute_run`` subprocesses instead. The run worker's PID goes to the run tag
    ``RUN_WORKER_PID_TAG``; ``terminate`` and ``check_run_worker_health`` use it.
    """

    def __init__(
        self,
        preload_modules: Sequence[str] = DEFAULT_PRELOAD_MODULES,
        inst_data: ConfigurableClassData | None = None,
    ):
        """Create the launcher; its zygote is started by the first ``launch_run``.

        Args:
            preload_modules: dotted module names the zygote imports before its first fork;
                a module that fails to import makes every launch fail with ``ZygoteError``.
            inst_data: the ``ConfigurableClassData`` the instance loaded this class from.
        """
        self._inst_data = inst_data
        self._zygote = RunWorkerZygote(preload_modules)
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        """The ``ConfigurableClassData`` this launcher was loaded from (None if built directly)."""
        return self._inst_data

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        """Config schema: ``preload_modules`` (list of str, default ``DEFAULT_PRELOAD_MODULES``)."""
        return {
            "preload_modules": Field(
                Array(str),
                is_required=False,
                default_value=list(DEFAULT_PRELOAD_MODULES),
                description="Modules the zygote imports once, before forking run workers.",
            )
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> PreforkRunLauncher:
        """Build the launcher from its validated config (``preload_modules`` filled in)."""
        return cls(preload_modules=config_value["preload_modules"], inst_data=inst_data)

    def launch_run(self, context: LaunchRunContext) -> None:
        """Start the run's worker and record its PID in the run tag ``RUN_WORKER_PID_TAG``.

        Returns once the worker process exists (it reports ``STARTED`` itself); the workspace
        in ``context`` is not used. Needs the instance registered (``register_instance``).

        Raises:
            dagster._check.CheckError: the run has no ``job_code_origin``.
            ZygoteError, BrokenPipeError, subprocess.TimeoutExpired, OSError: as
                ``RunWorkerZygote.fork_run`` (or ``subprocess.Popen`` for another Python);
                ``DagsterInstance.launch_run`` then records the error and marks the run failed.
                A worker that starts but dies before reporting ``STARTED`` leaves the run
                ``STARTING`` until run monitoring's start timeout fails it.
        """
        run = context.dagster_run
        job_origin = check.not_none(run.job_code_origin, "run has no code origin")
        args = ExecuteRunArgs(
            job_origin=job_origin,
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=True,
        )
        if _same_python(job_origin.executable_path):
            pid = self._zygote.fork_run(serialize_value(args))
        else:
            pid = subprocess.Popen(args.get_command_args()).pid
        self._instance.add_run_tags(run.run_id, {RUN_WORKER_PID_TAG: str(pid)})

    def terminate(self, run_id: str) -> bool:
        """Mark the run ``CANCELING`` and send its worker SIGTERM (the worker then cancels the
        run cleanly and marks it ``CANCELED``).

        Returns:
            True if the signal was sent; False if the run is unknown or finished, has no
            recorded worker PID (an engine event says so), or the worker is already gone.

        Raises:
            PermissionError: the worker PID belongs to a process this user may not signal.
        """
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        pid = _worker_pid(run.tags)
        if pid is None:
            self._instance.report_engine_event(
                "No run worker PID recorded; cannot send the termination signal.",
                run,
                cls=self.__class__,
            )
            return False
        self._instance.report_run_canceling(run)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        """True: run monitoring may call ``check_run_worker_health``."""
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        """Whether the run's worker process is alive (run monitoring fails the run if not).

        Returns:
            ``WorkerStatus.RUNNING`` while the PID in ``RUN_WORKER_PID_TAG`` runs (not a
            zombie), ``FAILED`` once it is gone, ``UNKNOWN`` if no PID was recorded. Only
            meaningful on the machine that launched the run (PIDs are local).
        """
        pid = _worker_pid(run.tags)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no run worker PID recorded")
        if _process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker process {pid} is gone", run_worker_id=str(pid)
        )

    def dispose(self) -> None:
        """Stop the zygote (instance shutdown); running run workers are not affected."""
        self._zygote.close()


def _same_python(executable_path: str | None) -> bool:
    """True if the code location runs on this interpreter (so the zygote can fork its runs)."""
    if not executable_path:
        return True
    return os.path.realpath(executable_path) == os.path.realpath(sys.executable)


def _worker_pid(tags: Mapping[str, str]) -> int | None:
    """The run worker PID recorded in the run's tags, or None."""
    value = tags.get(RUN_WORKER_PID_TAG)
    return ascii_int(value)


def _process_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (nor exiting: its ``stat`` then fails with
    ESRCH while ``kill(pid, 0)`` still succeeds)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
