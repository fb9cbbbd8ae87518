"""Compare FerretDB 1.x backends (PostgreSQL vs SQLite) on the migration's write/read pattern.

Starts its own FerretDB processes (never touches the stack's FerretDB on 15017):
  * postgresql: the stack's PostgreSQL, database ``ferretdb`` (as notes_admin), port 55217
  * sqlite:     a scratch directory under ``.stack/ferretdb-sqlite-bench/``, port 55218
and runs the same workload on each, in a throw-away MongoDB database:
  1. ``bulk_write`` of N ``UpdateOne(filter, {$setOnInsert: doc}, upsert=True)`` in batches
     of B, ``ordered=False`` (first run: all upserted),
  2. the same batches again (re-run: all matched, nothing written),
  3. ``count_documents({company_sso_id, legacy_crm_note_id: {$exists: true}})``,
  4. ``find`` with ``$in`` over ``crm_data.id`` (indexed) + company scope, one per batch
     on a ``contacts`` collection of N contacts.

Usage (stack up first; FerretDB binary from scripts/build_ferretdb.sh):
  .venv/bin/python benchmarks/ferretdb_backends.py [--docs 5000] [--batch 500] [--repeat 3]
  .venv/bin/python benchmarks/ferretdb_backends.py --uri mongodb=mongodb://127.0.0.1:27017/
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from pymongo import MongoClient, UpdateOne

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notes_pipeline.core.envfile import read_env_file, stack_env_file  # noqa: E402
from notes_pipeline.core.resources.mongo_indexes import (  # noqa: E402
    ensure_contact_notes_index,
    ensure_contacts_index,
)

PORTS = {"postgresql": 55217, "sqlite": 55218}


def stack_env() -> dict[str, str]:
    path = stack_env_file(ROOT)
    if not path.is_file():
        sys.exit(f"{path} missing: run `bash scripts/stack.sh up` first")
    return read_env_file(path)


def ferretdb_binary() -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_ferretdb.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=900,
    )
    return out.stdout.strip().splitlines()[-1]


@contextmanager
def ferretdb(
    backend: str,
    env: dict[str, str],
    *,
    port: int | None = None,
    pg_params: dict[str, str] | None = None,
    name: str | None = None,
):
    """Run a private FerretDB for one backend; yields its URI; stops exactly that process.

    ``port`` defaults to ``PORTS[backend]``; ``pg_params`` are added to the PostgreSQL URL
    (pgx sends unknown ones as session settings, e.g. ``plan_cache_mode``); ``name`` names
    its state directory and log (default: the backend).
    """
    stack_dir = Path(os.environ.get("NOTES_PIPELINE_STACK_DIR", ROOT / ".stack"))
    scratch = stack_dir / "ferretdb-bench"
    name = name or backend
    state = scratch / f"state-{name}"
    state.mkdir(parents=True, exist_ok=True)
    port = port or PORTS[backend]
    args = [
        ferretdb_binary(),
        f"--listen-addr=127.0.0.1:{port}",
        "--telemetry=disable",
        "--debug-addr=-",
        f"--state-dir={state}",
        "--log-level=warn",
        f"--handler={backend}",
    ]
    proc_env = {**os.environ, "DO_NOT_TRACK": "1"}
    sqlite_dir = stack_dir / "ferretdb-sqlite-bench"
    if backend == "postgresql":
        admin = urlsplit(env["NOTES_PIPELINE_CRM_ADMIN_DSN"])
        proc_env["FERRETDB_POSTGRESQL_URL"] = admin._replace(
            scheme="postgres", path="/ferretdb", query=urlencode(pg_params or {})
        ).geturl()
    else:
        shutil.rmtree(sqlite_dir, ignore_errors=True)
        sqlite_dir.mkdir(parents=True)
        args.append(f"--sqlite-url=file:{sqlite_dir}/")
    log = open(scratch / f"{name}.log", "ab")
    proc = subprocess.Popen(args, env=proc_env, stdout=log, stderr=subprocess.STDOUT)
    uri = f"mongodb://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with MongoClient(uri, serverSelectionTimeoutMS=500) as client:
                    client.admin.command("ping")
                break
            except Exception as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"FerretDB ({backend}) did not start; see {log.name}"
                    ) from exc
                time.sleep(0.2)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if backend == "sqlite":
            shutil.rmtree(sqlite_dir, ignore_errors=True)


def note_doc(company: str, i: int, base: datetime) -> dict:
    return {
        "company_sso_id": company,
        "contact_id": f"contact-{i % 700}",
        "owner_id": None,
        "legacy_owner_label": "[Legacy CRM User]",
        "note": f"<b>Call</b> with customer #{i}: " + "lorem ipsum dolor sit amet " * 8,
        "attachments": [],
        "is_deleted": False,
        "legacy_crm_note_id": str(100_000 + i),
        "created_at": base + timedelta(minutes=i),
        "updated_at": base + timedelta(minutes=i, seconds=30),
    }


def run_once(uri: str, docs: int, batch: int, chunk: int) -> dict[str, float]:
    company = f"bench-{uuid.uuid4().hex[:8]}"
    dbname = f"bench_{uuid.uuid4().hex[:10]}"
    base = datetime(2021, 1, 1, tzinfo=UTC)
    with MongoClient(uri, socketTimeoutMS=300_000) as client:
        db = client[dbname]
        try:
            notes, contacts = db["contact_notes"], db["contacts"]
            ensure_contact_notes_index(notes)
            ensure_contacts_index(contacts)
            contacts.insert_many(
                [{"company_sso_id": company, "crm_data": {"id": str(i)}} for i in range(docs)]
            )
            batches = [
                [
                    UpdateOne(
                        {"company_sso_id": company, "legacy_crm_note_id": str(100_000 + i)},
                        {"$setOnInsert": note_doc(company, i, base)},
                        upsert=True,
                    )
                    for i in range(start, min(start + batch, docs))
                ]
                for start in range(0, docs, batch)
            ]
            out: dict[str, float] = {}
            for phase, expect in (("upsert_insert", "upserted"), ("upsert_rerun", "matched")):
                per_batch = []
                t0 = time.perf_counter()
                for ops in batches:
                    t = time.perf_counter()
                    got = 0
                    for start in range(0, len(ops), chunk):  # FerretDB: see --chunk
                        res = notes.bulk_write(ops[start : start + chunk], ordered=False)
                        got += res.upserted_count if expect == "upserted" else res.matched_count
                    per_batch.append(time.perf_counter() - t)
                    assert got == len(ops), (phase, got, len(ops))
                out[f"{phase}_total_s"] = time.perf_counter() - t0
                out[f"{phase}_batch_max_s"] = max(per_batch)
            t = time.perf_counter()
            n = notes.count_documents(
                {"company_sso_id": company, "legacy_crm_note_id": {"$exists": True}}
            )
            out["count_documents_s"] = time.perf_counter() - t
            assert n == docs, n
            t = time.perf_counter()
            found = 0
            for start in range(0, docs, batch):
                ids = [str(i) for i in range(start, min(start + batch, docs))]
                found += len(
                    list(contacts.find({"company_sso_id": company, "crm_data.id": {"$in": ids}}))
                )
            out["find_in_total_s"] = time.perf_counter() - t
            assert found == docs, found
            return out
        finally:
            client.drop_database(dbname)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument(
        "--chunk",
        type=int,
        default=40,
        help="UpdateOne ops per bulk_write call (FerretDB 1.x deadlocks above its connection "
        "pool size: >~50 ops on postgresql, >100 matched ops on sqlite; docs/MONGODB.md)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per backend; median reported")
    ap.add_argument("--backends", default="postgresql,sqlite")
    ap.add_argument(
        "--uri",
        action="append",
        default=[],
        metavar="NAME=URI",
        help="benchmark an already running server instead of spawning FerretDB",
    )
    ap.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = ap.parse_args()

    results: dict[str, dict[str, float]] = {}

    def measure(name: str, uri: str) -> None:
        runs = [run_once(uri, args.docs, args.batch, args.chunk) for _ in range(args.repeat)]
        results[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    if args.uri:
        for item in args.uri:
            name, _, uri = item.partition("=")
            measure(name, uri)
    else:
        env = stack_env()
        for backend in args.backends.split(","):
            with ferretdb(backend, env) as uri:
                measure(f"ferretdb-{backend}", uri)

    if args.json:
        print(json.dumps(results, indent=2))
        return
    cols = list(next(iter(results.values())))
    print(
        f"docs={args.docs} batch={args.batch} chunk={args.chunk} repeat={args.repeat} (median); "
        "seconds, lower is better\n"
    )
    print("| server | " + " | ".join(cols) + " | notes/s (insert) |")
    print("|---" * (len(cols) + 2) + "|")
    for name, r in results.items():
        rate = args.docs / r["upsert_insert_total_s"]
        print(f"| {name} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + f" | {rate:,.0f} |")


if __name__ == "__main__":
    main()
