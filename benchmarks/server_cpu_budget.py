"""The MongoDB server's CPU per activity-log record on the local stack (issue #13's budget).

Writes ``--records`` activity-log documents (the shape of ``activity_logs.rules.document``,
synthetic values) into ``activity_logs`` of a scratch database on the stack's MongoDB server,
with the product's own indexes (``CdpMongo.ensure_activity_log_indexes``) and the product's
write call (``CdpMongo.upsert_activity_logs``: ``$setOnInsert`` upserts, batches of 20,
``--threads`` batches in flight), then reads them back once the way the report does
(``CdpMongo.iter_activity_logs``). For each phase it reports the wall time, the records/s, the
machine's idle share (``/proc/stat``) and the CPU seconds of the stack's PostgreSQL and
FerretDB (``.stack/pids``) with every live process under them (from ``/proc/<pid>/stat``: a
pooled backend's CPU is not in its postmaster's ``cutime`` until it exits), per record.

From those and the CPU the perf benchmark measured per stage (``latest.json``
``activity_logs.extract`` … ``report``: each stage's own process, and the servers during extract
and plan), it prints the most records/s the whole family could reach on this machine if every
core were busy all the time and the stages overlapped perfectly: ``cores / CPU-seconds per
record``.

Usage (stack up; nothing else running):
  set -a; . .stack/env; set +a
  .venv/bin/python benchmarks/server_cpu_budget.py [--records 50000] [--threads 4] [--publish]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from procmon import cpu_seconds  # noqa: E402
from results_file import update_section  # noqa: E402

from notes_pipeline.core.resources.mongo import CdpMongo  # noqa: E402

SERVER_PROCESSES = ("postgres", "ferretdb")
BATCH = 20


def server_pids() -> dict[str, int]:
    """The stack's server PIDs (``.stack/pids/<name>.pid``: "pid start-time")."""
    stack_dir = Path(os.environ.get("NOTES_PIPELINE_STACK_DIR", ROOT / ".stack"))
    pids = {}
    for name, file in (("postgres", "postgres.pid"), ("ferretdb", "mongo.pid")):
        try:
            pids[name] = int((stack_dir / "pids" / file).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return pids


def server_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) of each of this stack's servers: the server with the
    descendants it has reaped (``procmon.cpu_seconds``) plus every live process under it
    (PostgreSQL's backends), from ``/proc/<pid>/stat``; a backend that exits between two
    readings moves from the second part to the first, so differences stay right."""
    tck = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        parent[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tck
    roots = {pid: name for name, pid in server_pids().items()}
    total = dict.fromkeys(SERVER_PROCESSES, 0.0)
    for pid, used in cpu.items():
        walk = pid
        while walk > 1 and walk not in roots:
            walk = parent.get(walk, 0)
        if walk in roots and walk != pid:
            total[roots[walk]] += used
    for pid, name in roots.items():
        total[name] += cpu_seconds(pid, children=True)
    return total


def idle_ticks() -> tuple[int, int]:
    """(idle + iowait, all) jiffies of the machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3] + values[4], sum(values)


def document(company: str, i: int) -> dict[str, Any]:
    """An activity-log document of the §5 shape (``rules.document.build_document``)."""
    created = datetime(2023, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    return {
        "company_sso_id": company,
        "customer_id": f"cust-{i % 5000}",
        "category": "contact",
        "action": "update",
        "user_id": f"user-{i % 50}",
        "actor": {"type": "user", "id": f"user-{i % 50}"},
        "changes": [{"field": "stage", "from": "lead", "to": "customer"}],
        "created_at": created,
        "updated_at": created,
        "external_id": f"crm_audit:{i}",
        "source_tag": "crm_migration",
        "metadata": {
            "crm_audit_id": i,
            "crm_auditable_type": "Crm::Person",
            "crm_auditable_id": i % 5000,
            "crm_associated_type": None,
            "crm_associated_id": None,
            "crm_action": "update",
            "crm_version": 2,
            "crm_user_id": i % 50,
            "crm_user_deleted": False,
            "crm_person_id": i % 5000,
            "contact_resolved_by": "crm_person_id",
            "actor_case": "A1",
            "job_id": "cpu-budget",
        },
    }


def measure(phase: Callable[[], int]) -> dict[str, Any]:
    """Run ``phase`` (returns the records it handled); wall, idle share and server CPU."""
    cpu0, (idle0, all0), t0 = server_cpu_s(), idle_ticks(), time.monotonic()
    client0 = time.process_time()
    records = phase()
    wall = time.monotonic() - t0
    client = time.process_time() - client0
    cpu1, (idle1, all1) = server_cpu_s(), idle_ticks()
    server = {k: round(cpu1[k] - cpu0[k], 2) for k in SERVER_PROCESSES}
    per_record_ms = {k: round(1000 * v / records, 4) for k, v in server.items()}
    return {
        "records": records,
        "wall_s": round(wall, 2),
        "records_per_s": round(records / wall),
        "idle_pct": round(100 * (idle1 - idle0) / max(1, all1 - all0), 1),
        "server_cpu_s": server,
        "server_cpu_ms_per_record": per_record_ms,
        "server_cpu_ms_per_record_total": round(sum(per_record_ms.values()), 4),
        "client_cpu_ms_per_record": round(1000 * client / records, 4),
    }


def family_bound(write: dict[str, Any], read: dict[str, Any], other: dict[str, float]):
    """The most records/s the family could reach here: cores / CPU-seconds per record, with
    ``other`` (CPU-ms per record) for the work these two phases do not measure."""
    cores = os.cpu_count() or 1
    total_ms = (
        write["server_cpu_ms_per_record_total"]
        + read["server_cpu_ms_per_record_total"]
        + sum(other.values())
    )
    return {
        "cores": cores,
        "other_cpu_ms_per_record": other,
        "cpu_ms_per_record": round(total_ms, 4),
        "max_records_per_s": round(cores * 1000 / total_ms),
    }


def perf_stage_cpu() -> dict[str, float]:
    """CPU-ms per record, from the published perf run (``latest.json`` ``activity_logs``):
    each stage's own process, and the servers' CPU during extract and plan (the CRM query, the
    contact lookups). Empty when there is no published run."""
    path = ROOT / "benchmarks" / "results" / "latest.json"
    try:
        section = json.loads(path.read_text())["activity_logs"]
    except (OSError, KeyError, ValueError):
        return {}
    other: dict[str, float] = {}
    for stage in ("extract", "plan", "load", "report"):
        figures = section.get(stage) or {}
        records = figures.get("audits") or 0
        if not records:
            continue
        other[f"{stage}_process"] = round(1000 * figures.get("cpu_s", 0) / records, 4)
        if stage in ("extract", "plan"):
            other[f"{stage}_servers"] = round(1000 * figures.get("server_cpu_s", 0) / records, 4)
    return other


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=4, help="batches in flight (4: §11)")
    parser.add_argument("--publish", action="store_true", help="write activity_logs.cpu_budget")
    args = parser.parse_args(argv)

    database = f"cpu_budget_{uuid.uuid4().hex[:8]}"
    mongo = CdpMongo(uri=os.environ["NOTES_PIPELINE_MONGO_URI"], database=database)
    company = "cpu-budget-company"
    try:
        mongo.ensure_activity_log_indexes()

        def write() -> int:
            starts = range(0, args.records, BATCH)

            def one(start: int) -> int:
                docs = [document(company, i) for i in range(start, start + BATCH)]
                return len(mongo.upsert_activity_logs(company, docs).upserted)

            with ThreadPoolExecutor(args.threads) as pool:
                return sum(pool.map(one, starts))

        def read() -> int:
            return sum(1 for _ in mongo.iter_activity_logs(company))

        written = measure(write)
        read_back = measure(read)
    finally:
        mongo._db().client.drop_database(database)
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "records": args.records,
        "threads": args.threads,
        "mongo": os.environ.get("NOTES_PIPELINE_MONGO_KIND", "unknown"),
        "write": written,
        "read": read_back,
        "bound": family_bound(written, read_back, perf_stage_cpu()),
        "command": "set -a; . .stack/env; set +a; .venv/bin/python "
        "benchmarks/server_cpu_budget.py " + " ".join(argv or sys.argv[1:]),
    }
    print(json.dumps(out, indent=2))
    if args.publish:
        update_section("activity_logs", {"cpu_budget": out}, merge=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
