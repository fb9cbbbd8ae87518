"""EXPERIMENT ONLY (``full_backfill.py --profile-run-workers N``): cProfile run workers.

On PYTHONPATH of the benchmark's daemon only. Profiles go to $NOTES_BENCH_PROFILE_DIR/<pid>.prof,
for at most $NOTES_BENCH_PROFILE_MAX processes:
- a multiprocessing spawn child (how the stock launcher's code server starts each run): cProfile
  from interpreter start-up (imports included) to exit;
- a child forked by the prefork launcher's zygote (``notes_pipeline.instance.run_worker_zygote``,
  which ends its children with ``os._exit``): cProfile around ``execute_run_worker``.
"""

import os

_DIR = os.environ.get("NOTES_BENCH_PROFILE_DIR")


def _start() -> None:
    import atexit
    import cProfile

    try:
        with open("/proc/self/cmdline", "rb") as fh:
            cmd = fh.read()
    except OSError:
        return
    if b"run_worker_zygote" in cmd:
        os.register_at_fork(after_in_child=_profile_forked_run_worker)
        return
    if b"multiprocessing.spawn" not in cmd or b"spawn_main" not in cmd or not _under_limit():
        return
    prof = cProfile.Profile()

    def dump() -> None:
        prof.disable()
        prof.dump_stats(os.path.join(_DIR, f"{os.getpid()}.prof"))

    atexit.register(dump)
    prof.enable()


def _under_limit() -> bool:
    try:
        return len(os.listdir(_DIR)) < int(os.environ.get("NOTES_BENCH_PROFILE_MAX", "5"))
    except OSError:
        return False


def _profile_forked_run_worker() -> None:
    """In a zygote child: wrap ``execute_run_worker`` (looked up by ``_child`` at call time)."""
    import sys

    zygote = sys.modules["__main__"]  # ``python -m notes_pipeline.instance.run_worker_zygote``
    run = getattr(zygote, "execute_run_worker", None)
    if run is None or not _under_limit():
        return
    import cProfile

    def profiled(serialized_args: str) -> int:
        prof = cProfile.Profile()
        try:
            return prof.runcall(run, serialized_args)
        finally:
            prof.dump_stats(os.path.join(_DIR, f"{os.getpid()}.prof"))

    zygote.execute_run_worker = profiled


if _DIR:
    _start()
