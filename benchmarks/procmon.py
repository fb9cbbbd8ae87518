"""Process helpers from /proc (no psutil): session members, RSS sampling, stop by PID.

Used by ``full_backfill.py`` to measure the peak memory of the dagster daemon/webserver
sessions (daemon, its code server, every run worker and their helpers) and to stop exactly
the processes the benchmark started, PID by PID (a PID is only signalled while its start time
still matches the one recorded, so a recycled PID is never hit). ``scale.py`` samples one run
worker with ``rss_kb``, ``hwm_kb`` and ``pss_kb``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, start time in clock ticks, session id) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            raw = fh.read()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    if rest[0] == "Z":
        return None
    return int(rest[1]), int(rest[19]), int(rest[3])


def session_members(sid: int) -> dict[int, int]:
    """{pid: start_time} of every live process in session ``sid``.

    The benchmark starts each server with ``start_new_session=True``, so its session holds
    exactly that server and everything it spawned - including run workers that were
    re-parented to init when their code server exited.
    """
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[2] == sid:
                found[int(entry)] = st[1]
    return found


def start_time(pid: int) -> int | None:
    st = _stat(pid)
    return None if st is None else st[1]


def sessions_members(sids: set[int]) -> dict[int, dict[int, tuple[int, float]]]:
    """{sid: {pid: (start_time, own cpu seconds)}} for the given sessions, in one /proc pass."""
    found: dict[int, dict[int, tuple[int, float]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                raw = fh.read()
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2 :].split()
        sid = int(rest[3])
        if sid in sids and rest[0] != "Z":
            cpu = (int(rest[11]) + int(rest[12])) / CLK_TCK
            found.setdefault(sid, {})[int(entry)] = (int(rest[19]), cpu)
    return found


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 if gone)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def hwm_kb(pid: int) -> int:
    """Peak resident set size of ``pid`` so far (VmHWM, KiB; 0 if gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size of ``pid`` in KiB: shared pages (forked run workers share most of
    theirs with the zygote) count once across the processes sharing them. Falls back to RSS."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss_kb(pid)


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def classify(pid: int) -> str:
    """A short role name for a process of a dagster tree."""
    cmd = cmdline(pid)
    if "dagster-daemon" in cmd or "dagster._daemon" in cmd:
        return "daemon"
    if "dagster-webserver" in cmd or "dagster_webserver" in cmd:
        return "webserver"
    if "api grpc" in cmd or "code-server" in cmd:
        return "code_server"
    if "run_worker_zygote" in cmd:  # PreforkRunLauncher: the zygote and its forked run workers
        st = _stat(pid)
        return "run_worker" if st and "run_worker_zygote" in cmdline(st[0]) else "zygote"
    if "execute_run" in cmd or "api execute" in cmd or "multiprocessing.spawn" in cmd:
        return "run_worker"  # the code server starts each run in a multiprocessing child
    if "multiprocessing.resource_tracker" in cmd:
        return "mp_resource_tracker"
    if "watch_orphans" in cmd:
        return "log_watcher"
    if cmd.startswith("tail "):
        return "tail"
    return os.path.basename(cmd.split(" ", 1)[0]) if cmd else "?"


@dataclass
class TreeSampler:
    """Samples the summed PSS of process sessions every ``interval`` seconds in a thread.

    ``roots`` maps a name to a session leader's PID (= the session id).
    """

    roots: dict[str, int]
    interval: float = 0.5
    peak_total_kb: dict[str, int] = field(default_factory=dict)
    peak_process_kb: dict[str, tuple[int, str]] = field(default_factory=dict)
    peak_all_kb: int = 0
    max_run_workers: int = 0
    cpu_by_pid: dict[tuple[int, int], tuple[str, float]] = field(default_factory=dict)
    roles: dict[tuple[int, int], str] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample_once(self) -> None:
        total_all = 0
        workers = 0
        members = sessions_members(set(self.roots.values()))  # one pass over /proc
        for name, root in self.roots.items():
            total = 0
            for pid, (started, cpu) in members.get(root, {}).items():
                rss = rss_kb(pid)
                total += pss_kb(pid)
                role = self.roles.get((pid, started)) or self.roles.setdefault(
                    (pid, started), classify(pid)
                )
                self.cpu_by_pid[(pid, started)] = (f"{name}:{role}", cpu)
                workers += role == "run_worker"
                if rss > self.peak_process_kb.get(name, (0, ""))[0]:
                    self.peak_process_kb[name] = (rss, role)
            self.peak_total_kb[name] = max(self.peak_total_kb.get(name, 0), total)
            total_all += total
        self.peak_all_kb = max(self.peak_all_kb, total_all)
        self.max_run_workers = max(self.max_run_workers, workers)
        self.samples += 1

    def cpu_by_role(self) -> dict[str, dict[str, float]]:
        """CPU seconds per process role (last sample of each process; short-lived processes
        lose at most one sampling interval) and how many processes of that role were seen."""
        out: dict[str, dict[str, float]] = {}
        for role, cpu in self.cpu_by_pid.values():
            entry = out.setdefault(role, {"processes": 0, "cpu_s": 0.0})
            entry["processes"] += 1
            entry["cpu_s"] = round(entry["cpu_s"] + cpu, 1)
        return out

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_once()

    def start(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def alive(pid: int, started: int) -> bool:
    """True while ``pid`` is the process that started at ``started`` and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[1] == started


def stop_pid(pid: int, started: int, grace_s: float = 20.0) -> bool:
    """SIGTERM, then SIGKILL after ``grace_s``, exactly ``pid`` while it is the same process.

    Returns False if the process was already gone. Reaps it when it is our child.
    """
    if not alive(pid, started):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while alive(pid, started) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    if alive(pid, started):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.2)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def cpu_seconds(pid: int, children: bool = True) -> float:
    """utime + stime of ``pid`` (+ cutime + cstime: its waited-for descendants), seconds."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            raw = fh.read()
    except OSError:
        return 0.0
    rest = raw[raw.rindex(")") + 2 :].split()
    ticks = int(rest[11]) + int(rest[12])
    if children:
        ticks += int(rest[13]) + int(rest[14])
    return ticks / CLK_TCK


def session_cpu_seconds(sid: int) -> float:
    """CPU used so far by a session: every live member plus the descendants it has reaped.

    Run workers are reaped by the code server that spawned them, so their CPU shows up in
    the code server's cutime/cstime; processes re-parented to init are not counted.
    """
    return sum(cpu_seconds(pid) for pid in session_members(sid))
