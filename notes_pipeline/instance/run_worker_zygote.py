"""Run-worker zygote: imports the heavy modules once, then forks one run worker per request.

Started by ``PreforkRunLauncher`` as ``python -m notes_pipeline.instance.run_worker_zygote
MODULE...``. Protocol, one JSON object per line:

- zygote -> launcher: ``{"ready": true}`` once the modules are imported;
- launcher -> zygote: ``{"execute_run_args": "<serialized ExecuteRunArgs>"}``;
- zygote -> launcher: ``{"pid": <run worker pid>}``, or ``{"stale": true}`` and exit when a
  source file it imported has changed since (the launcher then starts a fresh zygote).

Each child does what ``dagster api execute_run`` does, without a new interpreter and without
importing dagster again. The zygote exits when its stdin closes (the launcher went away);
run workers already started keep running. Children are reaped by the kernel (SIGCHLD ignored).

``execute_run_worker`` uses private Dagster APIs pinned to 1.13 (``dagster._cli.api.
_execute_run_command_body``, ``dagster._grpc.types.ExecuteRunArgs``,
``dagster._utils.interrupts.capture_interrupts``, ``dagster._serdes.deserialize_value``);
``notes_pipeline_tests/test_private_dagster_apis.py`` checks them (fallback: ``dagster.stock.yaml``,
see ``docs/INSTANCE.md``).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import traceback


def execute_run_worker(serialized_args: str) -> int:
    """Body of ``dagster api execute_run``: run the whole job in this process; exit code.

    SIGTERM and SIGINT are captured while the run executes (``capture_interrupts`` maps SIGTERM
    to the SIGINT handler); Dagster then cancels the run at the next step boundary, which is
    how ``PreforkRunLauncher.terminate`` works.

    Args:
        serialized_args: ``serialize_value(ExecuteRunArgs(...))``; its ``instance_ref`` must be
            set (the run's instance) and the run must exist there with a ``job_code_origin``.

    Returns:
        0 when the run succeeded, or when it failed but ``set_exit_code_on_failure`` is false;
        1 when it failed and ``set_exit_code_on_failure`` is true. Step and run failures are
        written to the run's event log, not raised.

    Raises:
        dagster._check.CheckError: the run does not exist or has no code origin.
        dagster_shared.serdes.errors.DeserializationError: ``serialized_args`` is not an
            ``ExecuteRunArgs`` of this Dagster version.
    """
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.instance import DagsterInstance
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts

    with capture_interrupts():
        args = deserialize_value(serialized_args, ExecuteRunArgs)
        with DagsterInstance.from_ref(args.instance_ref) as instance:
            return _execute_run_command_body(
                args.run_id,
                instance,
                lambda _event: None,
                set_exit_code_on_failure=bool(args.set_exit_code_on_failure),
            )


def _child(serialized_args: str, protocol_fds: tuple[int, ...]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd in protocol_fds:
        os.close(fd)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    code = 1
    try:
        code = execute_run_worker(serialized_args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def imported_files() -> dict[str, int]:
    """Source files of every imported module with their modification times.

    Returns:
        ``{path: st_mtime_ns}`` (nanoseconds) for every module in ``sys.modules`` that has a
        ``__file__`` that can be stat'ed (built-in and namespace modules are skipped).
    """
    files = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path not in files:
            try:
                files[path] = os.stat(path).st_mtime_ns
            except OSError:
                continue
    return files


def changed(files: dict[str, int]) -> bool:
    """True if any file of ``imported_files()`` now has another mtime or is gone."""
    for path, mtime in files.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return True
        except OSError:
            return True
    return False


def main(preload_modules: list[str]) -> None:
    """Import ``preload_modules``, then serve fork requests on stdin until it closes.

    Returns when stdin reaches EOF, or after answering ``{"stale": true}`` to a request that
    came after an imported source file changed.

    Raises:
        ImportError: a preload module does not import (the launcher sees the zygote exit
            before ``{"ready": true}`` and raises ``ZygoteError``).
        json.JSONDecodeError, KeyError: a request line is not the protocol's JSON object.
    """
    for name in preload_modules:
        importlib.import_module(name)
    files = imported_files()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # The protocol owns stdin and a private copy of stdout; everything printed goes to stderr.
    requests = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    reply({"ready": True})
    for line in requests:
        if not line.strip():
            continue
        serialized_args = json.loads(line)["execute_run_args"]
        if changed(files):
            reply({"stale": True})
            return
        pid = os.fork()
        if pid == 0:
            _child(serialized_args, (requests.fileno(), replies.fileno()))
        reply({"pid": pid})


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (KeyboardInterrupt, BrokenPipeError):
        pass
