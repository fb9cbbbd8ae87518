"""Activity logs on the ``perf`` profile (SPEC-activity-logs §11, §16; issues #13, #14.3): one
CID with 1,000,000 audits interleaved with 500,000 of a filler CID, written with COPY, then the
real assets ``crm_audits_raw`` (Stage-0 probe + keyset extraction) and
``normalized_activity_logs`` (the plan), each materialized in its own process the way a run
worker runs them (``dg.materialize`` on a persistent instance, the default filesystem IO
manager between the two), with audits/s, CPU seconds and peak RSS per stage.

Everything goes to scratch databases this script creates and drops (never the demo's or the
tests'): PostgreSQL ``crm_perf_<hex>`` (CRM and the identity table) through the stack's admin
DSN, MongoDB ``cdp_perf_<hex>``, and a throw-away Dagster instance in a temporary directory.
The plan runs with ``PostgresIdentityDirectory`` on the scratch database (the stack's identity
service does not know the perf users).

  set -a; . .stack/env; set +a
  .venv/bin/python benchmarks/activity_logs_perf.py [--keep] [--reuse HEX] [--set chunk_size=N]
      [--date-range-start 2022-06-01] [--code-root DIR] [--cprofile FILE] [--publish]

``--keep`` keeps the scratch databases (their suffix is printed) and ``--reuse HEX`` runs on
them again without seeding (with ``--keep`` again to keep them for the next run);
``--set name=value`` overrides an ``ActivityLogSettings`` field (repeatable); ``--code-root``
runs the stages on another checkout of the project (e.g. a ``git archive`` of an older commit,
for before/after figures); ``--cprofile`` writes the plan stage's cProfile stats.

Prints one JSON object: seed timings, then per stage the audits, wall seconds, audits/s, the
stage process's CPU seconds and peak RSS, the stack servers' CPU seconds (PostgreSQL with its
reaped backends, the MongoDB server) and the stage's metadata figures, and the load average
before and after (the machine is shared: wall figures depend on it, CPU seconds much less);
``--publish`` also writes it to ``benchmarks/results/latest.json`` (section
``activity_logs``). The load, the report and the ceiling (bare pymongo upserts of the same
documents) follow the plan; ``perf`` holds #13's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
STAGES = {
    "extract": "crm_audits_raw",
    "plan": "normalized_activity_logs",
    "load": "cdp_activity_logs_loaded",
    "report": "activity_log_validation_report",
}
CEILING = "ceiling"  # bare pymongo upserts of the same planned documents (not an asset)
#: metadata figures reported per stage (those present in the stage's materialization)
FIGURES = (
    "count",
    "extracted",
    "pages",
    "planned",
    "ready",
    "skipped",
    "failed",
    "lookup_batches",
    "contact_lookups",
    "chunks",
    "identity_emails",
    "records_total",
    "records_migrated",
    "records_skipped",
    "records_failed",
    "batches",
    "first_window_s",
    "last_window_s",
    "status",
    "accuracy_pct",
    "target_count",
    "source_count",
    "duplicates",
    "fidelity_mismatches",
)


def _with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def _admin(dsn: str, statement: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def _settings(pairs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        try:
            values[name] = json.loads(raw)
        except ValueError:
            values[name] = raw
    return values


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


# --- one stage, in its own process -------------------------------------------------------


def run_stage(args: argparse.Namespace) -> dict[str, Any]:
    """Materialize one stage's asset for the perf CID on the shared instance; measure it."""
    if args.code_root:
        sys.path.insert(0, str(Path(args.code_root).resolve()))
    import dagster as dg

    from devtools.synthetic.audits import PERF_CID
    from notes_pipeline.activity_logs.definitions import activity_log_assets
    from notes_pipeline.activity_logs.settings import ActivityLogSettings
    from notes_pipeline.core.resources.crm import PostgresCrmSource
    from notes_pipeline.core.resources.identity import PostgresIdentityDirectory
    from notes_pipeline.core.resources.mongo import CdpMongo
    from notes_pipeline.core.resources.storage import AttachmentStorage

    dsn = _with_db(os.environ["NOTES_PIPELINE_CRM_ADMIN_DSN"], args.crm_db)
    cid = str(PERF_CID)
    Path(args.instance, "dagster.yaml").touch()  # the defaults: SQLite storage in that dir
    instance = dg.DagsterInstance.local_temp(tempdir=args.instance)
    if cid not in instance.get_dynamic_partitions("cid"):
        instance.add_dynamic_partitions("cid", [cid])
    resources = {
        "crm_audits": PostgresCrmSource(dsn=dsn),
        "cdp_mongo": CdpMongo(uri=os.environ["NOTES_PIPELINE_MONGO_URI"], database=args.cdp_db),
        "identity": PostgresIdentityDirectory(dsn=dsn),
        "activity_log_settings": ActivityLogSettings(
            **{"enabled_cids": "*", **_settings(args.set)}
        ),
        "attachment_storage": AttachmentStorage(
            bucket=os.environ["NOTES_PIPELINE_CDP_BUCKET"],
            endpoint_url=os.environ.get("NOTES_PIPELINE_S3_ENDPOINT_URL") or None,
        ),
    }
    if args.stage == CEILING:
        return run_ceiling(instance, resources["cdp_mongo"], cid, _settings(args.set))
    config = {"date_range_start": args.date_range_start} if args.date_range_start else {}
    asset = STAGES[args.stage]
    rss_before = _rss_mib()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    profiler = None
    if args.cprofile and args.stage == "plan":
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    result = dg.materialize(
        activity_log_assets,
        selection=[asset],
        partition_key=cid,
        resources=resources,
        instance=instance,
        run_config={"ops": {asset: {"config": config}}} if args.stage == "extract" else None,
        raise_on_error=False,
    )
    seconds = time.monotonic() - started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.cprofile)
    end = resource.getrusage(resource.RUSAGE_SELF)
    events = result.asset_materializations_for_node(asset)
    meta = {k: v.value for k, v in events[-1].metadata.items()} if events else {}
    audits = int(
        meta.get("planned")
        or meta.get("records_total")
        or meta.get("source_count")
        or meta.get("extracted")
        or 0
    )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    import notes_pipeline

    return {
        "code": str(Path(notes_pipeline.__file__).parent.parent),
        "success": result.success,
        "audits": audits,
        "seconds": round(seconds, 1),
        "audits_per_s": round(audits / seconds) if seconds else None,
        "cpu_s": round(end.ru_utime + end.ru_stime - cpu.ru_utime - cpu.ru_stime, 1),
        "audits_per_cpu_s": None,
        "rss_before_stage_mib": rss_before,
        "peak_rss_mib": round(end.ru_maxrss / 1024),
        "checks": checks,
        "metadata": {k: meta[k] for k in FIGURES if k in meta},
    }


def run_ceiling(instance, cdp_mongo, cid: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The server's own ceiling for the load (#13): the plan's ready documents written with a
    bare pymongo ``bulk_write`` of ``$setOnInsert`` upserts, batches of ``batch_size`` (20)
    over ``write_concurrency`` (4) threads, into a fresh collection of the same server with
    the same unique index. Reads the plan the ``plan`` stage stored."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    from bson import ObjectId
    from pymongo import UpdateOne

    batch_size = int(settings.get("batch_size", 20))
    threads = int(settings.get("write_concurrency", 4))
    stored = Path(instance.storage_directory(), STAGES["plan"], cid)
    plan = pickle.loads(stored.read_bytes())
    collection = cdp_mongo.collection("activity_logs_ceiling")
    collection.drop()
    collection.create_index([("company_sso_id", 1), ("external_id", 1)], unique=True)
    rss_before = _rss_mib()
    cpu = resource.getrusage(resource.RUSAGE_SELF)

    def write(batch: list[dict[str, Any]]) -> None:
        collection.bulk_write(
            [
                UpdateOne(
                    {"company_sso_id": d["company_sso_id"], "external_id": d["external_id"]},
                    {"$setOnInsert": {**d, "_id": ObjectId()}},
                    upsert=True,
                )
                for d in batch
            ],
            ordered=False,
        )

    def batches():
        batch: list[dict[str, Any]] = []
        for entry in plan.iter_entries():
            if entry.document is not None and str(entry.outcome) == "ready":
                batch.append(entry.document)
                if len(batch) == batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    written = 0
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        window: list[list[dict[str, Any]]] = []
        for batch in batches():
            window.append(batch)
            if len(window) == threads * 8:
                list(pool.map(write, window))
                written += sum(len(b) for b in window)
                window = []
        list(pool.map(write, window))
        written += sum(len(b) for b in window)
    seconds = time.monotonic() - started
    end = resource.getrusage(resource.RUSAGE_SELF)
    collection.drop()
    return {
        "success": True,
        "audits": written,
        "seconds": round(seconds, 1),
        "audits_per_s": round(written / seconds) if seconds else None,
        "cpu_s": round(end.ru_utime + end.ru_stime - cpu.ru_utime - cpu.ru_stime, 1),
        "audits_per_cpu_s": None,
        "rss_before_stage_mib": rss_before,
        "peak_rss_mib": round(end.ru_maxrss / 1024),
        "checks": {},
        "metadata": {"batch_size": batch_size, "write_concurrency": threads},
    }


# --- the driver ----------------------------------------------------------------------------


def _server_cpu_s() -> float:
    """CPU seconds used so far by the stack's PostgreSQL (with its reaped backends) and
    MongoDB server, from their PID files in ``.stack/pids`` (0 when unreadable)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from procmon import cpu_seconds, start_time

    stack_dir = Path(os.environ.get("NOTES_PIPELINE_STACK_DIR", ROOT / ".stack"))
    total = 0.0
    for name in ("postgres", "mongo"):
        try:
            pid, started = (
                int(x) for x in (stack_dir / "pids" / f"{name}.pid").read_text().split()
            )
        except (OSError, ValueError):
            continue
        if start_time(pid) == started:
            total += cpu_seconds(pid)
    return total


def seed_perf(admin: str, crm_db: str, cdp_db: str) -> dict[str, Any]:
    """Seed ``perf`` into fresh scratch databases; returns the seed timings."""
    import psycopg2

    sys.path.insert(0, str(ROOT))
    from devtools.synthetic import build_dataset
    from devtools.synthetic.writer import Targets, seed

    _admin(admin, f"CREATE DATABASE {crm_db}")
    dsn = _with_db(admin, crm_db)
    started = time.monotonic()
    targets = replace(Targets.from_env(), crm_dsn=dsn, identity_dsn=dsn, mongo_db=cdp_db)
    timings = seed(build_dataset("perf"), targets, attachments=False)["timings"]
    timings["wall_s"] = round(time.monotonic() - started, 1)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("ANALYZE")
    return timings


def drive(args: argparse.Namespace) -> dict[str, Any]:
    """Seed (or reuse) the scratch databases, run each stage in a child process, report."""
    env = os.environ
    suffix = args.reuse or uuid.uuid4().hex[:8]
    crm_db, cdp_db = f"crm_perf_{suffix}", f"cdp_perf_{suffix}"
    admin = env["NOTES_PIPELINE_CRM_ADMIN_DSN"]
    out: dict[str, Any] = {"scratch": suffix, "settings": _settings(args.set)}
    out["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
    if args.date_range_start:
        out["date_range_start"] = args.date_range_start
    if args.code_root:
        out["code_root"] = args.code_root
    try:
        if not args.reuse:
            out["seed"] = seed_perf(admin, crm_db, cdp_db)
        else:  # a fresh target: what an earlier run wrote would make every write a skip
            from pymongo import MongoClient

            with MongoClient(env["NOTES_PIPELINE_MONGO_URI"]) as client:
                for name in (
                    "activity_logs",
                    "crm_activity_log_migration_jobs",
                    "crm_activity_log_migration_locks",
                    "crm_activity_log_migration_failures",
                ):
                    client[cdp_db].drop_collection(name)
        with tempfile.TemporaryDirectory(prefix="activity_logs_perf_") as home:
            for stage in [*STAGES, CEILING]:
                command = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    *("--stage", stage, "--instance", home, "--crm-db", crm_db),
                    *("--cdp-db", cdp_db),
                    *(f"--set={pair}" for pair in args.set),
                ]
                if args.date_range_start:
                    command += ["--date-range-start", args.date_range_start]
                if args.code_root:
                    command += ["--code-root", args.code_root]
                if args.cprofile:
                    command += ["--cprofile", args.cprofile]
                server = _server_cpu_s()
                child_env = {**env, "PYTHONPATH": args.code_root or str(ROOT)}
                done = subprocess.run(
                    command, cwd=ROOT, env=child_env, capture_output=True, text=True
                )
                if done.returncode != 0:
                    sys.stderr.write(done.stderr[-5000:])
                    raise SystemExit(f"stage {stage} failed ({done.returncode})")
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                figures["server_cpu_s"] = round(_server_cpu_s() - server, 1)
                if figures["cpu_s"]:
                    figures["audits_per_cpu_s"] = round(figures["audits"] / figures["cpu_s"])
                out[stage] = figures
        extract, plan = out["extract"], out["plan"]
        seconds = extract["seconds"] + plan["seconds"]
        out["extract_plus_plan"] = {
            "audits": plan["audits"],
            "seconds": round(seconds, 1),
            "audits_per_s": round(plan["audits"] / seconds) if seconds else None,
            "peak_rss_mib": max(extract["peak_rss_mib"], plan["peak_rss_mib"]),
        }
        out["perf"] = family_figures(out)
        out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if not args.keep:
            from pymongo import MongoClient

            with MongoClient(env["NOTES_PIPELINE_MONGO_URI"]) as client:
                client.drop_database(cdp_db)
            _admin(admin, f"DROP DATABASE IF EXISTS {crm_db} WITH (FORCE)")
    return out


def family_figures(out: dict[str, Any]) -> dict[str, Any]:
    """#13's figures: the whole family (four stages) in records/s, the peak RSS of any stage,
    the load's records/s against the ceiling's, and the first vs last write window."""
    stages = [out[s] for s in STAGES]
    seconds = sum(s["seconds"] for s in stages)
    records = out["extract"]["audits"]
    load, ceiling = out["load"], out[CEILING]
    written = load["metadata"].get("records_migrated", 0)
    load_rate = written / load["seconds"] if load["seconds"] else None
    return {
        "records": records,
        "seconds": round(seconds, 1),
        "records_per_s": round(records / seconds) if seconds else None,
        "peak_rss_mb": max(s["peak_rss_mib"] for s in stages),
        "load_records_per_s": round(load_rate) if load_rate else None,
        "ceiling_records_per_s": ceiling["audits_per_s"],
        "ratio_to_ceiling": round(load_rate / ceiling["audits_per_s"], 2)
        if load_rate and ceiling["audits_per_s"]
        else None,
        "first_window_s": load["metadata"].get("first_window_s"),
        "last_window_s": load["metadata"].get("last_window_s"),
        "status": out["report"]["metadata"].get("status"),
        "accuracy_pct": out["report"]["metadata"].get("accuracy_pct"),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments; drive the benchmark, or run one stage (``--stage``, internal)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument("--reuse", metavar="HEX", help="reuse kept scratch databases")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--date-range-start", help="run config: extract from this date")
    parser.add_argument("--code-root", help="run the stages on this checkout")
    parser.add_argument("--cprofile", help="write the plan stage's cProfile stats here")
    parser.add_argument("--publish", action="store_true", help="update results/latest.json")
    parser.add_argument("--stage", choices=sorted([*STAGES, CEILING]), help=argparse.SUPPRESS)
    parser.add_argument("--instance", help=argparse.SUPPRESS)
    parser.add_argument("--crm-db", help=argparse.SUPPRESS)
    parser.add_argument("--cdp-db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps(run_stage(args), default=str))
        return 0
    out = drive(args)
    print(json.dumps(out, indent=2, default=str))
    if args.publish:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from results_file import update_section

        update_section("activity_logs", out, merge=True)  # keeps the full backfill's keys
    return 0


if __name__ == "__main__":
    sys.exit(main())
