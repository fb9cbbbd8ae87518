"""One home for `benchmarks/results/latest.json`: each benchmark owns one section.

Shape: ``{"date", "commit", "machine", "<section>": {...}, ...}``; ``update_section`` rewrites
only its own section (plus ``date``/``commit``/``machine``) and keeps every other one.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LATEST = Path(__file__).resolve().parent / "results" / "latest.json"


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=LATEST.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    """The machine the figures were taken on."""
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def update_section(
    name: str, data: dict[str, Any], path: Path = LATEST, *, merge: bool = False
) -> Path:
    """Replace section ``name`` of ``path`` with ``data`` (``merge``: only the keys of
    ``data``, keeping the section's other keys, e.g. another benchmark's figures in a shared
    section); other sections are kept."""
    current: dict[str, Any] = {}
    if path.exists():
        current = json.loads(path.read_text())
    previous = current.get(name)
    current[name] = {**previous, **data} if merge and isinstance(previous, dict) else data
    current["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    current["commit"] = _commit()
    current["machine"] = machine()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2, default=str, sort_keys=False) + "\n")
    return path
