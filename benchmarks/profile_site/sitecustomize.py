"""EXPERIMENT ONLY (``full_backfill.py --profile-run-workers N``): cProfile run workers.

On PYTHONPATH of the benchmark's daemon only. In a process whose command line is a
multiprocessing spawn child (how the code server starts each run) it starts cProfile at
interpreter start-up - so imports are included - and dumps the profile at exit into
$NOTES_BENCH_PROFILE_DIR/<pid>.prof, for at most $NOTES_BENCH_PROFILE_MAX processes.
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
    if b"multiprocessing.spawn" not in cmd or b"spawn_main" not in cmd:
        return
    limit = int(os.environ.get("NOTES_BENCH_PROFILE_MAX", "5"))
    try:
        if len(os.listdir(_DIR)) >= limit:
            return
    except OSError:
        return
    prof = cProfile.Profile()

    def dump() -> None:
        prof.disable()
        prof.dump_stats(os.path.join(_DIR, f"{os.getpid()}.prof"))

    atexit.register(dump)
    prof.enable()


if _DIR:
    _start()
