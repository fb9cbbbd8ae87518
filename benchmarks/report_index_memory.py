"""Memory of the activity-log report's stored index (``validation.index_stored``): the former
dict of digests against the compact index (sorted int64 ids + uint64 digests).

For each size N and implementation, in a fresh process each (so peaks do not mix):

* ``traced``: ``tracemalloc`` peak and held bytes above the baseline, per stored document;
* ``rss``: peak RSS (VmHWM) above the RSS before indexing, no tracemalloc (what a run
  worker's peak RSS sees), and the wall time of that run (informational).

The documents are small synthetic stored documents streamed from a generator (never a list),
ids in a scrambled order (``i * 7919 mod N``), so the numbers are the index's own cost.

  .venv/bin/python benchmarks/report_index_memory.py [--sizes 100000 1000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notes_pipeline.activity_logs.validation import (  # noqa: E402
    audit_id_of,
    digest,
    index_stored,
)


# --- OLD: the index before branch compact-report (a dict of 8-byte digests), verbatim -------
@dataclass
class OldStoredIndex:
    digests: dict[int, bytes] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    unkeyed: int = 0
    scanned: int = 0


def old_index_stored(documents: Iterable[Mapping[str, Any]]) -> OldStoredIndex:
    index = OldStoredIndex()
    for doc in documents:
        index.scanned += 1
        audit_id = audit_id_of(doc.get("external_id"))
        if audit_id is None:
            index.unkeyed += 1
            continue
        if audit_id in index.digests:
            index.duplicates.append(str(doc.get("external_id")))
            continue
        index.digests[audit_id] = digest(doc)
    return index


# --- end of OLD ------------------------------------------------------------------------------

IMPLEMENTATIONS: dict[str, Callable[[Iterable[Mapping[str, Any]]], Any]] = {
    "old (dict)": old_index_stored,
    "new (compact)": index_stored,
}


def documents(count: int) -> Iterator[dict[str, Any]]:
    for i in range(count):
        audit_id = i * 7919 % count + 1
        yield {
            "_id": i,
            "company_sso_id": "co-bench",
            "external_id": f"crm_audit:{audit_id}",
            "source_tag": "crm_migration",
            "changes": [],
            "metadata": {"crm_audit_id": audit_id, "job_id": "j"},
        }


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def measure(name: str, count: int, mode: str) -> dict[str, float]:
    """One measurement in this process (the child's job)."""
    index = IMPLEMENTATIONS[name]
    docs = documents(count)
    gc.collect()
    if mode == "traced":
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
        result = index(docs)
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert result.scanned == count
        return {"peak_bytes": peak - baseline, "held_bytes": held - baseline}
    rss_before = _status_kb("VmRSS")
    started = time.perf_counter()
    result = index(docs)
    wall = time.perf_counter() - started
    assert result.scanned == count
    return {"peak_rss_bytes": (_status_kb("VmHWM") - rss_before) * 1024, "wall_s": wall}


def run_child(name: str, count: int, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, str(count), mode],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, count, mode = args.child
        print(json.dumps(measure(name, int(count), mode)))
        return
    mb = 1024 * 1024
    print(
        f"{'N':>9}  {'implementation':<14} {'traced peak':>12} {'B/rec':>6} {'held':>10} "
        f"{'B/rec':>6} {'peak RSS +':>11} {'B/rec':>6} {'wall':>7}"
    )
    for count in args.sizes:
        for name in IMPLEMENTATIONS:
            traced = run_child(name, count, "traced")
            rss = run_child(name, count, "rss")
            print(
                f"{count:>9,}  {name:<14} {traced['peak_bytes'] / mb:>9.1f} MB "
                f"{traced['peak_bytes'] / count:>6.1f} {traced['held_bytes'] / mb:>7.1f} MB "
                f"{traced['held_bytes'] / count:>6.1f} {rss['peak_rss_bytes'] / mb:>8.1f} MB "
                f"{rss['peak_rss_bytes'] / count:>6.1f} {rss['wall_s']:>6.1f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
