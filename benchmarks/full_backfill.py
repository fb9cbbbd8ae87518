"""The `full` backfill benchmark: every full-profile CID through a real dagster-daemon.

What it does (see BENCHMARKS.md for the figures and the policy):
  1. seeds the `full` synthetic profile (`python -m devtools.synthetic seed --profile
     full`: 130 CIDs 2001..2130, 21,000 notes, 10,931 attachment objects);
  2. clears the migrated `contact_notes` of those companies (company_sso_id from the CRM
     `organizations` table) and their copied attachments;
  3. measures the per-note CPU cost of `plan_note` against `nh3.clean` (transform_cost.py);
  4. registers the CID partitions (`python -m notes_pipeline.cli register-cids`; CID 2130
     has no Person notes, so it is added by hand the way Ops adds one in the UI);
  5. starts `dagster-daemon run` and `dagster-webserver` on the instance in DAGSTER_HOME
     (PostgreSQL storage, QueuedRunCoordinator from dagster.yaml) with
     NOTES_PIPELINE_ENABLED_CIDS='*', launches the backfill of job `migrate_cid` over all
     CIDs with the same GraphQL `launchPartitionBackfill` call the UI makes, and polls the
     instance until every run finished;
  6. reports wall time (launch -> last run end), notes/s, runs, per-run overhead, peak PSS of
     the daemon/webserver process sessions (sampled from /proc every 0.5 s), and per-CID
     outcomes from `notes_pipeline.core.status.all_statuses` plus the validation reports' counts.

Isolation (default): the stack is shared with other engineers, and seeding `full` replaces
every synthetic CID (stage1 included) in whatever CRM it writes to, so by default the
benchmark uses its own databases on the stack's PostgreSQL (crm_bench, identity_bench,
dagster_bench - recreated on every run - and ferretdb_bench), its own buckets on the stack's
moto S3 (crm-attachments-bench, cdp-notes-bench) and its own DAGSTER_HOME
(.stack/bench/dagster_home, whose dagster.yaml is the repo's dagster.yaml, plus any
--run-coordinator overrides). Same servers, same storage engines, same config: only the
names differ. `--shared` uses .stack/env as is (the stack's own crm/dagster/cdp; destroys
the stage1 data).

MongoDB: if the stack's FerretDB runs on its SQLite backend (upserts O(collection size)),
the benchmark starts a private FerretDB (PostgreSQL backend, database ferretdb_bench) on
127.0.0.1:15117 and stops it at the end (`--mongo stack|private` to force either).

Every process it starts (FerretDB, daemon, webserver and their descendants) is stopped by
PID at the end, also on failure or timeout (--timeout, default 1200 s).

Both families (`--families both`, issue #13): the daemon and webserver also get
NOTES_PIPELINE_ACTIVITY_LOGS_ENABLED_CIDS='*', the companies' migrated activity logs, job
documents, locks and failure records are cleared too, and ONE backfill covers both families:
a pure asset backfill (`launchPartitionBackfill` with `assetSelection` = the 8 assets of the
two groups and `partitionNames`, no partition set: what the UI sends when assets of both
groups are selected), waited for until the backfill is complete and every run finished.
Besides the figures above it reports how Dagster laid the runs out, each family's wall time
(launch -> the end of its last step), records/s per family and combined, and the
activity-log outcomes per CID from their job documents (crm_activity_log_migration_jobs):
final status, and migrated + skipped + failed = the CID's source count (the seeded dataset's
Stage-0 COUNT). `--publish` then writes the `activity_logs` section (full_backfill_wall_s and
full_backfill), never the notes-only `full_backfill` section.

Usage (after `bash scripts/stack.sh up`):
  .venv/bin/python benchmarks/full_backfill.py
  .venv/bin/python benchmarks/full_backfill.py --max-concurrent-runs 4 --dequeue-interval 1
  .venv/bin/python benchmarks/full_backfill.py --families both
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import full_backfill_results as fbr  # noqa: E402
import procmon  # noqa: E402
import transform_cost  # noqa: E402
from ferretdb_backends import ferretdb_binary  # noqa: E402
from results_file import LATEST, update_section  # noqa: E402

from notes_pipeline.core.envfile import read_env_file, stack_env_file  # noqa: E402

FULL_CIDS = [str(c) for c in range(2001, 2131)]
FULL_TOTAL_NOTES = 21_000
FULL_OBJECTS = 10_931
JOB = fbr.NOTES_JOB
ASSETS = list(fbr.NOTES_ASSETS)
BENCH_DIR = ROOT / ".stack" / "bench"
PRIVATE_FERRETDB_PORT = 15117
PUBLIC_READ = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "PublicRead",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::{bucket}/*",
        }
    ],
}


class BenchTimeout(Exception):
    pass


def arm_timeout(seconds: float) -> None:
    """Self-stopping: ``BenchTimeout`` after ``seconds`` (SIGALRM), and SIGTERM as
    ``KeyboardInterrupt``, so the caller's clean-up stops every process it started."""

    def on_alarm(signum, frame):
        raise BenchTimeout(f"hard timeout of {seconds:.0f} s reached")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(int(seconds))


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- environment
def stack_env() -> dict[str, str]:
    path = stack_env_file(ROOT)
    if not path.is_file():
        sys.exit(f"{path} missing: run `bash scripts/stack.sh up` first")
    return read_env_file(path)


def with_db(dsn: str, db: str) -> str:
    return urlsplit(dsn)._replace(path=f"/{db}").geturl()


def admin_conn(env: dict[str, str], db: str = "postgres"):
    import psycopg2

    conn = psycopg2.connect(with_db(env["NOTES_PIPELINE_CRM_ADMIN_DSN"], db))
    conn.autocommit = True
    return conn


def ensure_database(env: dict[str, str], name: str, recreate: bool = False) -> None:
    with closing(admin_conn(env)) as conn, conn.cursor() as cur:
        if recreate:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
        cur.execute(f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC')


def grant_crm_reader(env: dict[str, str], db: str) -> None:
    """The read-only CRM role, as scripts/stack.sh provisions it for `crm`."""
    reader = urlsplit(env["NOTES_PIPELINE_CRM_DSN"]).username
    with closing(admin_conn(env)) as conn, conn.cursor() as cur:
        cur.execute(f'GRANT CONNECT ON DATABASE "{db}" TO {reader}')
    with closing(admin_conn(env, db)) as conn, conn.cursor() as cur:
        cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        cur.execute(f"GRANT USAGE ON SCHEMA public TO {reader}")
        cur.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}")


def bench_env(base: dict[str, str], args: argparse.Namespace) -> dict[str, str]:
    env = dict(base)
    if not args.shared:
        s3 = env["NOTES_PIPELINE_S3_ENDPOINT_URL"]
        env.update(
            NOTES_PIPELINE_CRM_DSN=with_db(env["NOTES_PIPELINE_CRM_DSN"], "crm_bench"),
            NOTES_PIPELINE_CRM_ADMIN_DSN=with_db(env["NOTES_PIPELINE_CRM_ADMIN_DSN"], "crm_bench"),
            NOTES_PIPELINE_IDENTITY_DSN=with_db(
                env["NOTES_PIPELINE_IDENTITY_DSN"], "identity_bench"
            ),
            DAGSTER_PG_DB="dagster_bench",
            DAGSTER_HOME=str(BENCH_DIR / "dagster_home"),
            NOTES_PIPELINE_MONGO_DB="cdp_bench",
            NOTES_PIPELINE_CRM_BUCKET="crm-attachments-bench",
            NOTES_PIPELINE_CDP_BUCKET="cdp-notes-bench",
            NOTES_PIPELINE_CRM_ATTACHMENT_BASE_URL=f"{s3}/crm-attachments-bench",
        )
        # The stack's identity stand-in serves the `identity` database; the benchmark's users
        # live in `identity_bench`, read directly (the local fallback of resources/selection).
        env.pop("NOTES_PIPELINE_IDENTITY_URL", None)
        env.pop("NOTES_PIPELINE_IDENTITY_TOKEN", None)
        if env.get("NOTES_PIPELINE_CRM_AUDIT_DSN"):  # the audits live in crm_bench too
            env["NOTES_PIPELINE_CRM_AUDIT_DSN"] = with_db(
                env["NOTES_PIPELINE_CRM_AUDIT_DSN"], "crm_bench"
            )
    env["NOTES_PIPELINE_ENABLED_CIDS"] = "*"
    if getattr(args, "families", "notes") == "both":
        env["NOTES_PIPELINE_ACTIVITY_LOGS_ENABLED_CIDS"] = "*"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- processes
class Procs:
    """Processes this benchmark started; stopped by PID (and start time) at the end."""

    def __init__(self) -> None:
        self.started: dict[str, tuple[subprocess.Popen, int]] = {}
        self.samplers: list[procmon.TreeSampler] = []
        self.logs: list = []

    def start(self, name: str, argv: list[str], env: dict[str, str], logfile: Path):
        logfile.parent.mkdir(parents=True, exist_ok=True)
        fh = open(logfile, "ab")  # noqa: SIM115 - closed in stop_all
        self.logs.append(fh)
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its session = it + everything it spawns (see stop_all)
        )
        started = procmon.start_time(proc.pid)
        self.started[name] = (proc, started)
        log(f"started {name} (pid {proc.pid})")
        return proc

    def stop_one(self, name: str) -> None:
        proc, started = self.started.pop(name)
        procmon.stop_pid(proc.pid, started)
        proc.wait(timeout=10)
        for pid, pid_started in procmon.session_members(proc.pid).items():
            procmon.stop_pid(pid, pid_started, grace_s=10)

    def stop_all(self) -> list[str]:
        """Stop each started server, then whatever is left in its session, PID by PID."""
        stopped = []
        for sampler in self.samplers:
            sampler.stop()
        for name, (proc, started) in reversed(list(self.started.items())):
            if procmon.stop_pid(proc.pid, started, grace_s=30):
                stopped.append(f"{name}:{proc.pid}")
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for _ in range(3):  # run workers / code servers that outlived the server
                leftovers = procmon.session_members(proc.pid)
                if not leftovers:
                    break
                for pid, pid_started in leftovers.items():
                    if procmon.stop_pid(pid, pid_started, grace_s=10):
                        stopped.append(f"{name}-session:{pid}")
        self.started.clear()
        for fh in self.logs:
            fh.close()
        return stopped


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, proc: subprocess.Popen, deadline: float) -> None:
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"process {proc.pid} did not open port {port}")
        time.sleep(0.3)


def start_private_ferretdb(procs: Procs, env: dict[str, str]) -> str:
    """FerretDB 1.x, PostgreSQL backend, database ferretdb_bench, on 127.0.0.1:15117."""
    if port_open(PRIVATE_FERRETDB_PORT):
        sys.exit(f"port {PRIVATE_FERRETDB_PORT} is in use (a previous benchmark still running?)")
    ensure_database(env, "ferretdb_bench")
    state = BENCH_DIR / "ferretdb-state"
    state.mkdir(parents=True, exist_ok=True)
    admin = urlsplit(env["NOTES_PIPELINE_CRM_ADMIN_DSN"])
    fenv = {
        **os.environ,
        "DO_NOT_TRACK": "1",
        # the URL (with password) through the environment, not argv (visible in ps)
        "FERRETDB_POSTGRESQL_URL": admin._replace(
            scheme="postgres", path="/ferretdb_bench"
        ).geturl(),
    }
    argv = [
        ferretdb_binary(),
        f"--listen-addr=127.0.0.1:{PRIVATE_FERRETDB_PORT}",
        "--handler=postgresql",
        "--telemetry=disable",
        "--debug-addr=-",
        f"--state-dir={state}",
        "--log-level=warn",
    ]
    proc = procs.start("ferretdb", argv, fenv, BENCH_DIR / "logs" / "ferretdb.log")
    uri = f"mongodb://127.0.0.1:{PRIVATE_FERRETDB_PORT}/"
    from pymongo import MongoClient

    deadline = time.monotonic() + 60
    while True:
        try:
            with MongoClient(uri, serverSelectionTimeoutMS=500) as client:
                client.admin.command("ping")
            return uri
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "private FerretDB did not start; see .stack/bench/logs"
                ) from None
            time.sleep(0.3)


def run_cmd(argv: list[str], env: dict[str, str], timeout: float, what: str) -> str:
    started = time.perf_counter()
    out = subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise RuntimeError(f"{what} failed (exit {out.returncode})")
    log(f"{what}: {time.perf_counter() - started:.1f} s")
    return out.stdout


# --------------------------------------------------------------------------- data
def ensure_buckets(env: dict[str, str]) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["NOTES_PIPELINE_S3_ENDPOINT_URL"])
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (env["NOTES_PIPELINE_CRM_BUCKET"], env["NOTES_PIPELINE_CDP_BUCKET"]):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
    policy = json.loads(
        json.dumps(PUBLIC_READ).replace("{bucket}", env["NOTES_PIPELINE_CRM_BUCKET"])
    )
    s3.put_bucket_policy(Bucket=env["NOTES_PIPELINE_CRM_BUCKET"], Policy=json.dumps(policy))


def crm_objects(env: dict[str, str]) -> int:
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3", endpoint_url=env["NOTES_PIPELINE_S3_ENDPOINT_URL"])
    paginator = s3.get_paginator("list_objects_v2")
    try:
        return sum(
            page.get("KeyCount", 0)
            for page in paginator.paginate(Bucket=env["NOTES_PIPELINE_CRM_BUCKET"], Prefix="orgs/")
        )
    except ClientError:
        return 0


def companies(env: dict[str, str], cids: list[str]) -> dict[str, str]:
    import psycopg2

    with closing(psycopg2.connect(env["NOTES_PIPELINE_CRM_DSN"])) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, company_sso_id FROM organizations WHERE id = ANY(%s)",
            ([int(c) for c in cids],),
        )
        return {str(cid): company for cid, company in cur.fetchall()}


def clear_targets(env: dict[str, str], by_cid: dict[str, str]) -> dict[str, int]:
    """Delete the companies' migrated notes and their copied attachments / error logs."""
    import boto3
    from pymongo import MongoClient

    with MongoClient(env["NOTES_PIPELINE_MONGO_URI"]) as client:
        notes = client[env["NOTES_PIPELINE_MONGO_DB"]]["contact_notes"]
        deleted = notes.delete_many(
            {
                "company_sso_id": {"$in": sorted(by_cid.values())},
                "legacy_crm_note_id": {"$exists": True},
            }
        ).deleted_count
    s3 = boto3.client("s3", endpoint_url=env["NOTES_PIPELINE_S3_ENDPOINT_URL"])
    bucket = env["NOTES_PIPELINE_CDP_BUCKET"]
    prefixes = [f"{c}/" for c in by_cid.values()] + [f"_migration_reports/{cid}/" for cid in by_cid]
    objects = delete_prefixes(s3, bucket, prefixes)
    return {"contact_notes_deleted": deleted, "cdp_objects_deleted": objects}


def delete_prefixes(s3, bucket: str, prefixes: list[str]) -> int:
    """Delete every object under each prefix of ``bucket``; returns how many."""
    objects = 0
    paginator = s3.get_paginator("list_objects_v2")
    for prefix in prefixes:
        keys = [
            item["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            s3.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
        objects += len(keys)
    return objects


def clear_activity_logs(env: dict[str, str], by_cid: dict[str, str]) -> dict[str, int]:
    """Delete the companies' migrated activity logs (source_tag crm_migration), their job
    documents, locks and failure records, and their activity-log error CSVs: a job document
    left by an earlier run would otherwise be resumed or taken over."""
    import boto3
    from pymongo import MongoClient

    from notes_pipeline.core.resources import mongo as m

    companies = sorted(by_cid.values())
    by_company = {"company_sso_id": {"$in": companies}}
    with MongoClient(env["NOTES_PIPELINE_MONGO_URI"]) as client:
        db = client[env["NOTES_PIPELINE_MONGO_DB"]]
        out = {
            "activity_logs_deleted": db[m.ACTIVITY_LOGS]
            .delete_many({**by_company, "source_tag": m.SOURCE_TAG})
            .deleted_count,
            "jobs_deleted": db[m.ACTIVITY_LOG_JOBS].delete_many(by_company).deleted_count,
            "locks_deleted": db[m.ACTIVITY_LOG_LOCKS]
            .delete_many({"_id": {"$in": companies}})
            .deleted_count,
            "failures_deleted": db[m.ACTIVITY_LOG_FAILURES].delete_many(by_company).deleted_count,
        }
    s3 = boto3.client("s3", endpoint_url=env["NOTES_PIPELINE_S3_ENDPOINT_URL"])
    bucket = env["NOTES_PIPELINE_CDP_BUCKET"]
    prefixes = [f"_migration_reports/activity_logs/{cid}/" for cid in by_cid]
    out["cdp_objects_deleted"] = delete_prefixes(s3, bucket, prefixes)
    return out


def expected_counts(py: str, env: dict[str, str], cids: list[str]) -> dict[str, dict[str, int]]:
    """Per CID, the seeded `full` dataset's source notes and Stage-0 audit COUNT (from
    `python -m devtools.synthetic summary`, no I/O: the same generator, the same seed)."""
    out = run_cmd(
        [py, "-m", "devtools.synthetic", "summary", "--profile", "full"],
        env,
        120,
        "summary --profile full",
    )
    return fbr.expected_counts(json.loads(out), cids)


# --------------------------------------------------------------------------- dagster
def write_dagster_home(env: dict[str, str], args: argparse.Namespace) -> dict:
    """DAGSTER_HOME/dagster.yaml = the repo's dagster.yaml (+ run-coordinator overrides)."""
    import yaml

    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    rc_config = config["run_coordinator"]["config"]
    overrides = {
        "max_concurrent_runs": args.max_concurrent_runs,
        "dequeue_interval_seconds": args.dequeue_interval,
        "dequeue_use_threads": args.dequeue_use_threads,
        "dequeue_num_workers": args.dequeue_num_workers,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    backfills = {}
    if args.backfill_submit_workers:
        backfills = {"use_threads": True, "num_submit_workers": args.backfill_submit_workers}
    extra = bool(
        overrides
        or backfills
        or args.noop_compute_logs
        or args.stock_storage
        or args.stock_launcher
    )
    if args.shared:
        if extra:
            sys.exit("--shared uses the repo's dagster.yaml as is; no overrides")
        return config
    home = Path(env["DAGSTER_HOME"])
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    if not extra:
        (home / "dagster.yaml").symlink_to(ROOT / "dagster.yaml")
        return config
    rc_config.update(overrides)
    if backfills:
        config["backfills"] = backfills
    if args.stock_storage:
        config["storage"] = stock_storage(config)
    if args.stock_launcher:
        config.pop("run_launcher", None)  # DefaultRunLauncher
    if args.noop_compute_logs:
        config["compute_logs"] = {
            "module": "dagster._core.storage.noop_compute_log_manager",
            "class": "NoOpComputeLogManager",
        }
    header = "# Generated by benchmarks/full_backfill.py from the repo's dagster.yaml + overrides\n"
    (home / "dagster.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False))
    return config


def stock_storage(config: dict) -> dict:
    """dagster.yaml's storage section as plain dagster-postgres (NullPool connections)."""
    return {"postgres": config["storage"]["custom"]["config"]}


def wait_for_daemon(instance, proc: subprocess.Popen, since: float, deadline: float) -> None:
    wanted = {"BACKFILL", "QUEUED_RUN_COORDINATOR"}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited ({proc.returncode}); see its log")
        beats = instance.get_daemon_heartbeats()
        fresh = {k for k, hb in beats.items() if hb.timestamp >= since}
        if wanted <= fresh:
            return
        time.sleep(0.5)
    raise BenchTimeout("dagster-daemon did not heartbeat in time")


def graphql(port: int, query: str, variables: dict | None = None, timeout: float = 120) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        data = json.loads(resp.read())
    if data.get("errors"):
        raise RuntimeError(f"GraphQL errors: {data['errors']}")
    return data["data"]


REPOS_QUERY = """
{ repositoriesOrError { __typename
    ... on RepositoryConnection { nodes { name location { name } partitionSets { name } } }
    ... on PythonError { message } } }
"""
LAUNCH_MUTATION = """
mutation Launch($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_webserver(port: int, proc: subprocess.Popen, deadline: float) -> tuple[str, str]:
    """(location name, repository name) of the repo holding migrate_cid's partition set."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited ({proc.returncode}); see its log")
        try:
            repos = graphql(port, REPOS_QUERY, timeout=10)["repositoriesOrError"]
        except (urllib.error.URLError, ConnectionError, TimeoutError, RuntimeError):
            time.sleep(0.5)
            continue
        for node in repos.get("nodes", []):
            if any(ps["name"] == f"{JOB}_partition_set" for ps in node["partitionSets"]):
                return node["location"]["name"], node["name"]
        time.sleep(0.5)
    raise BenchTimeout("dagster-webserver did not load the code location in time")


def launch_backfill(
    port: int, location: str, repo: str, partitions: list[str], families: str = "notes"
) -> str:
    """What the UI sends: for `notes` an asset job's 'Launch backfill' (job + asset
    selection); for `both` the assets of both groups with their partitions (an asset backfill).
    """
    params = fbr.launch_params(families, partitions, location, repo, "full backfill benchmark")
    result = graphql(port, LAUNCH_MUTATION, {"backfillParams": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"launchPartitionBackfill: {result}")
    return result["backfillId"]


def wait_for_runs(
    instance, backfill_id: str, expected: int, deadline: float, until_complete: bool = False
) -> list:
    """The backfill's run records once at least `expected` runs exist and all finished; with
    `until_complete` also only once the backfill itself is complete (an asset backfill decides
    its runs itself, possibly over several daemon iterations)."""
    import dagster as dg
    from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES

    finished = {
        dg.DagsterRunStatus.SUCCESS,
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.CANCELED,
    }
    last_report = 0.0
    while True:
        records = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        done = sum(1 for r in records if r.dagster_run.status in finished)
        backfill = instance.get_backfill(backfill_id)
        complete = backfill is not None and backfill.status in BULK_ACTION_TERMINAL_STATUSES
        if len(records) >= expected and done == len(records) and (complete or not until_complete):
            return records
        if backfill is not None and backfill.status.value in ("FAILED", "CANCELED"):
            raise RuntimeError(f"backfill {backfill_id} ended {backfill.status.value}")
        if time.monotonic() - last_report > 15:
            status = backfill.status.value if backfill is not None else None
            log(f"runs: {len(records)} submitted, {done} finished; backfill {status}")
            last_report = time.monotonic()
        if time.monotonic() > deadline:
            raise BenchTimeout(f"runs not finished in time ({done}/{expected})")
        time.sleep(2.0)  # each poll opens new PostgreSQL connections (NullPool): keep it cheap


# --------------------------------------------------------------------------- metrics
RUN_EVENTS_SQL = """
SELECT run_id, count(*) AS events,
       min(extract(epoch FROM timestamp)) FILTER (WHERE dagster_event_type = 'PIPELINE_STARTING'),
       sum(CASE WHEN dagster_event_type IS NULL THEN 1 ELSE 0 END) AS log_lines,
       sum(CASE WHEN dagster_event_type = 'ASSET_CHECK_EVALUATION' THEN 1 ELSE 0 END) AS checks
FROM event_logs WHERE run_id = ANY(%(ids)s) GROUP BY run_id
"""
STEP_SQL = """
SELECT run_id, step_key,
       min(extract(epoch FROM timestamp)) FILTER (WHERE dagster_event_type = 'STEP_START'),
       max(extract(epoch FROM timestamp))
         FILTER (WHERE dagster_event_type IN ('STEP_SUCCESS', 'STEP_FAILURE', 'STEP_SKIPPED'))
FROM event_logs
WHERE run_id = ANY(%(ids)s) AND step_key IS NOT NULL
  AND dagster_event_type IN ('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE', 'STEP_SKIPPED')
GROUP BY run_id, step_key
"""


def dagster_dsn(env: dict[str, str]) -> str:
    return (
        f"postgresql://{env['DAGSTER_PG_USER']}:{env['DAGSTER_PG_PASSWORD']}@"
        f"{env['DAGSTER_PG_HOST']}:{env['DAGSTER_PG_PORT']}/{env['DAGSTER_PG_DB']}"
    )


def run_metrics(
    env: dict[str, str], records: list, launched_at: float, families: tuple[str, ...] = ("notes",)
) -> dict:
    """Per-run timings from the instance's run records plus two read-only event_logs queries.

    launch = the run's STARTING event (dequeued and handed to the run launcher);
    start/end = the run record's start_time/end_time (set by the run worker);
    in_steps = sum over steps of STEP_START -> STEP_SUCCESS/FAILURE.
    With more than one family: each family's wall time (launch -> the end of its last step).
    """
    import psycopg2

    ids = [r.dagster_run.run_id for r in records]
    with closing(psycopg2.connect(dagster_dsn(env))) as conn, conn.cursor() as cur:
        cur.execute(RUN_EVENTS_SQL, {"ids": ids})
        per_run_events = {row[0]: row[1:] for row in cur.fetchall()}
        cur.execute(STEP_SQL, {"ids": ids})
        steps: dict[str, dict[str, float]] = {}
        step_ends: dict[str, dict[str, float]] = {}
        for run_id, step_key, begin, end in cur.fetchall():
            if end is not None:
                step_ends.setdefault(run_id, {})[step_key] = float(end)
            if begin is not None and end is not None:
                steps.setdefault(run_id, {})[step_key] = float(end) - float(begin)
    per_run = []
    for record in records:
        run = record.dagster_run
        events, launched, log_lines, checks = per_run_events.get(run.run_id, (0, None, 0, 0))
        launched = float(launched) if launched is not None else None
        start, end = record.start_time, record.end_time
        run_steps = steps.get(run.run_id, {})
        per_run.append(
            {
                "cid": fbr.run_cid(run.tags),
                "status": run.status.value,
                "created": record.create_timestamp.timestamp(),
                "launched": launched,
                "start": start,
                "end": end,
                "in_run_s": (end - start) if start and end else None,
                "in_steps_s": sum(run_steps.values()),
                "steps": {k: round(v, 3) for k, v in run_steps.items()},
                "launch_to_start_s": (start - launched) if start and launched else None,
                "slot_s": (end - launched) if end and launched else None,
                "events": int(events),
                "log_lines": int(log_lines or 0),
                "check_evaluations": int(checks or 0),
            }
        )
    ends = [r["end"] for r in per_run if r["end"]]
    created = [r["created"] for r in per_run]
    med = statistics.median

    def m(key: str, rows=per_run) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]
        return round(med(values), 3) if values else None

    overhead = [r["in_run_s"] - r["in_steps_s"] for r in per_run if r["in_run_s"] is not None]
    empty = [r for r in per_run if r["cid"] == "2130"]
    step_medians = {}
    for key in fbr.selected_assets("both" if len(families) > 1 else "notes"):
        values = [r["steps"][key] for r in per_run if key in r["steps"]]
        if values:
            step_medians[key] = round(med(values), 3)
    layout = fbr.run_layout(
        {
            "cid": fbr.run_cid(r.dagster_run.tags),
            "job": r.dagster_run.job_name,
            "assets": [k.to_user_string() for k in r.dagster_run.asset_selection or ()],
            "checks": None
            if r.dagster_run.asset_check_selection is None
            else len(r.dagster_run.asset_check_selection),
        }
        for r in records
    )
    extra = {}
    if len(families) > 1:
        extra["wall_s_by_family"] = fbr.family_walls(step_ends, launched_at, families)
    return {
        "runs": len(per_run),
        "layout": layout,
        **extra,
        "runs_by_status": {
            s: sum(1 for r in per_run if r["status"] == s) for s in {r["status"] for r in per_run}
        },
        "wall_s": round(max(ends) - launched_at, 2) if ends else None,
        "launch_to_first_run_created_s": round(min(created) - launched_at, 2),
        "last_run_created_after_launch_s": round(max(created) - launched_at, 2),
        "median_run_s": m("in_run_s"),
        "median_in_steps_s": m("in_steps_s"),
        "median_overhead_in_run_s": round(med(overhead), 3) if overhead else None,
        "median_launch_to_start_s": m("launch_to_start_s"),
        "median_slot_s": m("slot_s"),
        "median_step_s": step_medians,
        "median_events_per_run": m("events"),
        "check_evaluations": sum(r["check_evaluations"] for r in per_run),
        "sum_slot_s": round(sum(r["slot_s"] or 0 for r in per_run), 1),
        "sum_in_steps_s": round(sum(r["in_steps_s"] for r in per_run), 1),
        "empty_cid_run": {k: v for k, v in empty[0].items() if k not in ("created", "start", "end")}
        if empty
        else None,
        "slowest_runs": sorted(
            (
                {"cid": r["cid"], "in_run_s": round(r["in_run_s"], 2), "steps": r["steps"]}
                for r in per_run
                if r["in_run_s"]
            ),
            key=lambda r: -r["in_run_s"],
        )[:5],
    }


def outcome_summary(instance, cids: list[str], expected_notes: int | None = None) -> dict:
    import dagster as dg

    from notes_pipeline.contact_notes.definitions import STATUS_ASSETS
    from notes_pipeline.core.status import all_statuses

    statuses = [s for s in all_statuses(instance, STATUS_ASSETS) if s.cid in set(cids)]
    by_status: dict[str, int] = {}
    for s in statuses:
        by_status[s.status] = by_status.get(s.status, 0) + 1
    totals = {"migrated": 0, "skipped": 0, "failed": 0, "out_of_scope": 0, "not_attempted": 0}
    missing_report = []
    for cid in cids:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("validation_report"), asset_partitions=[cid]
            ),
            limit=1,
        ).records
        if not records:
            missing_report.append(cid)
            continue
        meta = records[0].asset_materialization.metadata
        outcomes = meta["outcomes"].value
        for key in totals:
            totals[key] += int(outcomes.get(key, 0))
    accounted = sum(totals.values())
    return {
        "cids": len(statuses),
        "by_status": by_status,
        "not_ok": [
            {"cid": s.cid, "status": s.status, "failure_rate": s.failure_rate, "match": s.match_pct}
            for s in statuses
            if s.status != "completed_success"
        ],
        "totals": totals,
        "accounted_notes": accounted,
        "adds_up_to_21000": accounted == FULL_TOTAL_NOTES,
        "expected_notes": expected_notes,
        "adds_up": accounted == expected_notes,
        "cids_without_report": missing_report,
    }


def activity_log_outcomes(instance, env: dict[str, str], records: list, expected: dict) -> dict:
    """The activity-log outcome of each CID from the job documents of the backfill's runs
    (job_id = run id) in CDP MongoDB, tallied against the dataset's source counts and plan
    (`expected`: fbr.expected_counts); plus the final status each CID's report
    materialization recorded, which must agree, and why a CID without a job document never
    reached the load (its run's failed steps and failed checks)."""
    from pymongo import MongoClient

    from notes_pipeline.core.resources.mongo import ACTIVITY_LOG_JOBS

    run_cids = {r.dagster_run.run_id: fbr.run_cid(r.dagster_run.tags) for r in records}
    with MongoClient(env["NOTES_PIPELINE_MONGO_URI"]) as client:
        jobs = list(
            client[env["NOTES_PIPELINE_MONGO_DB"]][ACTIVITY_LOG_JOBS].find(
                {"job_id": {"$in": sorted(run_cids)}}
            )
        )
    tally = fbr.tally_activity_logs(
        jobs,
        run_cids,
        {cid: e["audits"] for cid, e in expected.items()},
        {cid: e["audit_plan"] for cid, e in expected.items()},
    )
    tally["report_disagrees"] = report_disagreements(instance, tally["per_cid"], run_cids)
    tally["not_loaded_why"] = {
        cid: run_failures(instance, [r for r in records if run_cids[r.dagster_run.run_id] == cid])
        for cid in tally["not_loaded"]
    }
    return tally


def run_failures(instance, records: list) -> list[dict]:
    """Per run: its status, the steps that failed and the asset checks that did not pass."""
    from dagster._core.events import DagsterEventType

    out = []
    for record in records:
        run = record.dagster_run
        events = instance.all_logs(
            run.run_id,
            of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.ASSET_CHECK_EVALUATION},
        )
        failed_steps, failed_checks = [], []
        for event in events:
            dagster_event = event.dagster_event
            if dagster_event.event_type == DagsterEventType.STEP_FAILURE:
                failed_steps.append(dagster_event.step_key)
                continue
            check = dagster_event.event_specific_data
            if not check.passed:
                failed_checks.append(
                    f"{check.asset_key.to_user_string()}:{check.check_name}"
                    + (" (blocking)" if check.blocking else "")
                )
        out.append(
            {
                "run_id": run.run_id,
                "status": run.status.value,
                "failed_steps": failed_steps,
                "failed_checks": failed_checks,
            }
        )
    return out


def report_disagreements(instance, per_cid: dict[str, dict], run_cids: dict[str, str]) -> list:
    """CIDs whose activity_log_validation_report (from one of the backfill's runs) records
    another status or other counts than the job document, or is missing."""
    import dagster as dg

    out = []
    for cid, row in per_cid.items():
        found = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("activity_log_validation_report"), asset_partitions=[cid]
            ),
            limit=1,
        ).records
        if not found or found[0].run_id not in run_cids:
            out.append({"cid": cid, "report": None})
            continue
        meta = found[0].asset_materialization.metadata
        status = meta["status"].value if "status" in meta else None
        outcomes = meta["outcomes"].value if "outcomes" in meta else {}
        counts = {k: int(outcomes.get(k, 0)) for k in ("migrated", "skipped", "failed")}
        if status != row["status"] or any(counts[k] != row[k] for k in counts):
            out.append({"cid": cid, "report": {"status": status, **counts}, "job": row})
    return out


def cpu_snapshot(roots: dict[str, int]) -> dict[str, float]:
    snap = {f"{name}_session": procmon.session_cpu_seconds(pid) for name, pid in roots.items()}
    pids = ROOT / ".stack" / "pids"
    for name, file in (("postgres", "postgres.pid"), ("ferretdb", "mongo.pid"), ("moto", "s3.pid")):
        try:
            pid = int((pids / file).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        snap[name] = procmon.cpu_seconds(pid)
    return snap


WORKER_PHASES = {
    # cumulative time of these functions (they nest, so they do not add up)
    "imports (all <module> code)": "<module>",
    "instance from ref": "from_ref",
    "load code location / job": "recon_job_from_origin",
    "get definitions": "get_definition",
    "execute run": "execute_run_iterator",
    "steps (user code + events)": "dagster_event_sequence_for_step",
    "store_event": "store_event",
    "new PG connections": "psycopg2/__init__.py:connect",
}


def worker_profile(prof_dir: Path, top: int = 30) -> dict:
    """Averages over the profiled run workers: total, phases, and the top functions."""
    import io
    import pstats

    files = sorted(prof_dir.glob("*.prof"))
    if not files:
        return {"profiles": 0}
    per_file = []
    for f in files:
        st = pstats.Stats(str(f))
        total = max(ct for (_cc, _nc, _tt, ct, _c) in st.stats.values())
        phases = {}
        for label, frag in WORKER_PHASES.items():
            values = [
                ct
                for (fn, _ln, func), (_cc, _nc, _tt, ct, _c) in st.stats.items()
                if frag in f"{fn}:{func}"
            ]
            if frag == "<module>":
                # top-level imports only: the largest cumulative <module> entries nest
                values = [max(values)] if values else []
            phases[label] = max(values) if values else 0.0
        per_file.append((total, phases))
    n = len(per_file)
    stats = pstats.Stats(*[str(f) for f in files])
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats("cumulative").print_stats(top)
    return {
        "profiles": n,
        "note": "cProfile inflates times; compare the parts, not the absolute values",
        "mean_total_s": round(sum(t for t, _ in per_file) / n, 2),
        "mean_phase_s": {k: round(sum(p[k] for _, p in per_file) / n, 2) for k in WORKER_PHASES},
        "top_cumulative": out.getvalue().splitlines()[: top + 12],
    }


def machine() -> dict:
    free = subprocess.run(["free", "-m"], stdout=subprocess.PIPE, text=True).stdout
    cpu = ""
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "free_m": free.strip(),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],  # noqa: SIM115
    }


# --------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--timeout", type=float, default=1200, help="hard limit for the whole script")
    ap.add_argument(
        "--families",
        choices=sorted(fbr.FAMILIES),
        default="notes",
        help="notes: job backfill of migrate_cid (default); both: one asset backfill of the "
        "notes and activity-log assets (publishes into section activity_logs)",
    )
    ap.add_argument("--shared", action="store_true", help="use the stack's databases as is")
    ap.add_argument("--mongo", choices=("auto", "stack", "private"), default="auto")
    ap.add_argument("--no-seed", action="store_true", help="reuse the data already seeded")
    ap.add_argument("--no-transform", action="store_true", help="skip the plan_note/nh3 timing")
    ap.add_argument("--transform-repeat", type=int, default=3)
    g = ap.add_argument_group("run coordinator / daemon overrides (private DAGSTER_HOME only)")
    g.add_argument("--max-concurrent-runs", type=int)
    g.add_argument("--dequeue-interval", type=int, help="dequeue_interval_seconds")
    g.add_argument("--dequeue-use-threads", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--dequeue-num-workers", type=int)
    g.add_argument("--backfill-submit-workers", type=int, help="backfills.num_submit_workers")
    g.add_argument("--noop-compute-logs", action="store_true", help="NoOpComputeLogManager")
    g.add_argument(
        "--stock-storage",
        action="store_true",
        help="plain dagster-postgres storage (a new connection per storage call)",
    )
    g.add_argument(
        "--stock-launcher",
        action="store_true",
        help="Dagster's DefaultRunLauncher (a new interpreter per run)",
    )
    ap.add_argument(
        "--no-webserver-after-launch",
        action="store_true",
        help="stop the webserver once the backfill is launched",
    )
    g2 = ap.add_argument_group("experiments (not the Ops setup)")
    g2.add_argument(
        "--code-server",
        action="store_true",
        help="one standalone `dagster code-server` (workspace: grpc_server) instead of the "
        "daemon/webserver spawning (and every 60 s re-spawning) their own",
    )
    g2.add_argument(
        "--profile-run-workers",
        type=int,
        default=0,
        metavar="N",
        help="cProfile the first N run workers (benchmarks/profile_site/sitecustomize.py)",
    )
    g2.add_argument("--cids", help="backfill only these CIDs, e.g. 2100-2110 (default: all 130)")
    ap.add_argument("--label", default="", help="free text stored with the results")
    ap.add_argument("--out", type=Path, help="results JSON (default .stack/bench/results/)")
    ap.add_argument(
        "--publish",
        action="store_true",
        help="also write the run into benchmarks/results/latest.json (section full_backfill; "
        "with --families both: full_backfill_wall_s and full_backfill of section activity_logs)",
    )
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    arm_timeout(args.timeout)

    base = stack_env()
    env = bench_env(base, args)
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": args.label,
        "argv": sys.argv[1:],
        "machine": machine(),
        "mode": "shared" if args.shared else "isolated",
        "families": args.families,
    }
    families = fbr.FAMILIES[args.families]
    procs = Procs()
    exit_code = 1
    try:
        # ---- MongoDB
        backend = base.get("NOTES_PIPELINE_FERRETDB_BACKEND", "")
        use_private = args.mongo == "private" or (args.mongo == "auto" and backend == "sqlite")
        if use_private:
            env["NOTES_PIPELINE_MONGO_URI"] = start_private_ferretdb(procs, env)
            results["mongo"] = "private FerretDB 1.24.2, PostgreSQL backend (:15117)"
        else:
            results["mongo"] = f"stack ({base.get('NOTES_PIPELINE_MONGO_KIND')} {backend})"
        log(f"mongo: {results['mongo']}")

        # ---- databases, buckets
        if not args.shared:
            ensure_database(env, "crm_bench")
            ensure_database(env, "identity_bench")
            ensure_database(env, "dagster_bench", recreate=True)
        os.environ.update(env)  # boto3, DagsterInstance.get() and the resources read it
        ensure_buckets(env)

        # ---- seed
        py = sys.executable
        if args.no_seed and crm_objects(env) != FULL_OBJECTS:
            log("--no-seed, but the CRM bucket does not hold the full profile: seeding")
            args.no_seed = False
        if not args.no_seed:
            out = run_cmd(
                [py, "-m", "devtools.synthetic", "seed", "--profile", "full"],
                env,
                900,
                "seed --profile full",
            )
            results["seed"] = json.loads(out)
        if not args.shared:
            grant_crm_reader(env, "crm_bench")
        by_cid = companies(env, FULL_CIDS)
        if len(by_cid) != len(FULL_CIDS):
            raise RuntimeError(f"expected {len(FULL_CIDS)} full-profile CIDs, found {len(by_cid)}")
        results["cleared"] = clear_targets(env, by_cid)
        if "activity_logs" in families:
            results["cleared"]["activity_logs"] = clear_activity_logs(env, by_cid)
        log(f"cleared: {results['cleared']}")

        # ---- transform cost (before the backfill, so nothing competes for the CPU)
        if not args.no_transform:
            started = time.perf_counter()
            items = transform_cost.load_items(FULL_CIDS, env)
            results["transform"] = transform_cost.measure(items, args.transform_repeat)
            results["transform"]["load_s"] = round(time.perf_counter() - started, 1)
            del items
            log(f"transform: {json.dumps(results['transform'])}")

        # ---- Dagster instance + partitions
        results["dagster_yaml"] = write_dagster_home(env, args)
        import dagster as dg

        instance = dg.DagsterInstance.get()
        out = run_cmd([py, "-m", "notes_pipeline.cli", "register-cids"], env, 300, "register-cids")
        results["register_cids"] = json.loads(out.strip().splitlines()[-1])
        registered = set(instance.get_dynamic_partitions("cid"))
        missing = [c for c in FULL_CIDS if c not in registered]
        if missing:  # CID 2130 has no Person notes: added by hand, as Ops would in the UI
            instance.add_dynamic_partitions("cid", missing)
            results["added_by_hand"] = missing
        partitions = transform_cost.parse_cids(args.cids) if args.cids else FULL_CIDS
        expected = expected_counts(py, env, partitions)
        records_expected = {
            family: sum(e[fbr.RECORDS[family]] for e in expected.values()) for family in families
        }
        results["cids"] = len(partitions)
        results["expected_records"] = records_expected

        # ---- daemon + webserver
        bin_dir = Path(py).parent
        workspace = str(ROOT / "workspace.yaml")
        daemon_env = dict(env)
        if args.profile_run_workers:
            prof_dir = BENCH_DIR / "worker_profiles"
            shutil.rmtree(prof_dir, ignore_errors=True)
            prof_dir.mkdir(parents=True)
            site = str(Path(__file__).resolve().parent / "profile_site")
            daemon_env["PYTHONPATH"] = os.pathsep.join(
                p for p in (site, env.get("PYTHONPATH")) if p
            )
            daemon_env["NOTES_BENCH_PROFILE_DIR"] = str(prof_dir)
            daemon_env["NOTES_BENCH_PROFILE_MAX"] = str(args.profile_run_workers)
        roots = {}
        if args.code_server:
            grpc_port = free_port()
            code = procs.start(
                "dagster-code-server",
                [
                    str(bin_dir / "dagster"),
                    "code-server",
                    "start",
                    "-m",
                    "notes_pipeline.definitions",
                    "-d",
                    str(ROOT),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(grpc_port),
                    "--location-name",
                    "notes_pipeline.definitions",
                ],
                daemon_env,
                BENCH_DIR / "logs" / "code_server.log",
            )
            roots["code_server"] = code.pid
            workspace = str(BENCH_DIR / "workspace.yaml")
            Path(workspace).write_text(
                "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
                f"      port: {grpc_port}\n      location_name: notes_pipeline.definitions\n"
            )
            wait_port(grpc_port, code, deadline)
        since = time.time()
        daemon = procs.start(
            "dagster-daemon",
            [str(bin_dir / "dagster-daemon"), "run", "-w", workspace],
            daemon_env,
            BENCH_DIR / "logs" / "daemon.log",
        )
        port = free_port()
        web = procs.start(
            "dagster-webserver",
            [
                str(bin_dir / "dagster-webserver"),
                "-w",
                workspace,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            env,
            BENCH_DIR / "logs" / "webserver.log",
        )
        roots.update(daemon=daemon.pid, webserver=web.pid)
        sampler = procmon.TreeSampler(roots).start()
        procs.samplers.append(sampler)
        wait_for_daemon(instance, daemon, since, min(deadline, time.monotonic() + 180))
        location, repo = wait_for_webserver(port, web, min(deadline, time.monotonic() + 180))
        log(f"daemon + webserver ready ({time.time() - since:.1f} s)")

        # ---- launch and wait
        cpu_before = cpu_snapshot(roots)
        loadavg_at_launch = open("/proc/loadavg").read().split()[:3]  # noqa: SIM115
        launched_at = time.time()
        backfill_id = launch_backfill(port, location, repo, partitions, args.families)
        log(f"backfill {backfill_id} launched over {len(partitions)} CIDs ({args.families})")
        if args.no_webserver_after_launch:
            procs.stop_one("dagster-webserver")
        # keep ~3 minutes of the hard timeout for the metrics and the clean stop
        records = wait_for_runs(
            instance,
            backfill_id,
            len(partitions),
            deadline - 180,
            until_complete=args.families != "notes",
        )
        finished_at = time.time()
        log(f"all {len(records)} runs finished {finished_at - launched_at:.1f} s after launch")
        cpu_after = cpu_snapshot(roots)
        sampler.sample_once()
        sampler.stop()

        metrics = run_metrics(env, records, launched_at, families)
        metrics["notes_per_s"] = fbr.rate(records_expected["notes"], metrics["wall_s"])
        if len(families) > 1:
            walls = metrics["wall_s_by_family"]
            metrics["records"] = {**records_expected, "combined": sum(records_expected.values())}
            metrics["records_per_s"] = {
                **{f: fbr.rate(records_expected[f], walls[f]) for f in families},
                "combined": fbr.rate(sum(records_expected.values()), metrics["wall_s"]),
            }
        metrics["backfill_id"] = backfill_id
        metrics["loadavg_at_launch"] = loadavg_at_launch
        metrics["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]  # noqa: SIM115
        results["backfill"] = metrics
        results["memory"] = {
            "sampling": "sum of PSS over each server's session (server + all it spawned), "
            "/proc every 0.5 s; largest_process is RSS",
            "samples": sampler.samples,
            **{
                f"peak_{name}_session_mb": round(kb / 1024, 1)
                for name, kb in sampler.peak_total_kb.items()
            },
            "peak_all_sessions_mb": round(sampler.peak_all_kb / 1024, 1),
            "largest_process": {
                name: {"mb": round(kb / 1024, 1), "role": role}
                for name, (kb, role) in sampler.peak_process_kb.items()
            },
            "max_concurrent_run_workers_seen": sampler.max_run_workers,
        }
        results["cpu_by_role"] = sampler.cpu_by_role()
        if args.profile_run_workers:
            results["run_worker_profile"] = worker_profile(BENCH_DIR / "worker_profiles")
        results["cpu_s"] = {
            k: round(cpu_after[k] - cpu_before[k], 1) for k in cpu_after if k in cpu_before
        }
        results["cpu_s"]["note"] = (
            "CPU seconds from launch to last run end. daemon/webserver: their sessions (run "
            "workers included, via the code server's cutime). postgres/ferretdb/moto: the "
            "shared servers (postgres = postmaster cutime = ended backends), so they include "
            "other users' load in the same window."
        )
        results["outcomes"] = outcome_summary(instance, partitions, records_expected["notes"])
        if "activity_logs" in families:
            results["activity_log_outcomes"] = activity_log_outcomes(
                instance, env, records, expected
            )
        # the daemon marks the backfill complete on its next iteration (every 30 s)
        status_deadline = min(deadline - 60, time.monotonic() + 35)
        while time.monotonic() < status_deadline:
            backfill = instance.get_backfill(backfill_id)
            if backfill.status.value.startswith("COMPLETED"):
                break
            time.sleep(2)
        results["backfill"]["backfill_status"] = instance.get_backfill(backfill_id).status.value
        exit_code = 0
    except (Exception, KeyboardInterrupt) as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"
        log(f"FAILED: {results['error']}")
    finally:
        signal.alarm(0)
        results["stopped"] = procs.stop_all()
        log(f"stopped: {results['stopped']}")
    results["script_s"] = round(time.monotonic() - t0, 1)
    out_path = args.out or BENCH_DIR / "results" / (
        datetime.now().strftime("%Y%m%dT%H%M%S")
        + (f"-{args.label}" if args.label else "")
        + ".json"
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2, default=str))
    if args.publish and exit_code == 0:
        log(f"published: {publish(results, out_path)}")
    print(json.dumps(summary(results), indent=2, default=str))
    log(f"results: {out_path}")
    return exit_code


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def publish(results: dict, out_path: Path, latest: Path = LATEST) -> Path:
    """`notes`: the run as section full_backfill. `both`: full_backfill_wall_s and the
    full_backfill details in section activity_logs, its other keys kept."""
    wall_s = results.get("backfill", {}).get("wall_s")
    if results["families"] == "notes":
        return update_section("full_backfill", {"wall_s": wall_s, **results}, latest)
    previous = json.loads(latest.read_text()).get("activity_logs") if latest.exists() else None
    section = fbr.activity_logs_section(previous, wall_s, publish_details(results, out_path))
    return update_section("activity_logs", section, latest)


def publish_details(results: dict, out_path: Path) -> dict:
    """The `full_backfill` sub-object of the activity_logs section (--families both)."""
    b = results.get("backfill", {})
    o = results.get("outcomes", {})
    a = results.get("activity_log_outcomes", {})
    try:
        results_file = str(out_path.resolve().relative_to(ROOT))
    except ValueError:
        results_file = str(out_path)
    return {
        "date": results["date"],
        "commit": git_commit(),
        "label": results.get("label"),
        "scope": f"the `full` profile, {results.get('cids')} CIDs, both families (notes + "
        "activity logs) in one asset backfill",
        "wall_s": b.get("wall_s"),
        "wall_s_by_family": b.get("wall_s_by_family"),
        "records": b.get("records"),
        "records_per_s": b.get("records_per_s"),
        "runs": b.get("runs"),
        "runs_by_status": b.get("runs_by_status"),
        "backfill_status": b.get("backfill_status"),
        "layout": b.get("layout"),
        "median_run_s": b.get("median_run_s"),
        "median_step_s": b.get("median_step_s"),
        "notes": {
            "totals": o.get("totals"),
            "accounted": o.get("accounted_notes"),
            "expected": o.get("expected_notes"),
            "adds_up": o.get("adds_up"),
            "by_status": o.get("by_status"),
        },
        "activity_logs": {k: v for k, v in a.items() if k != "per_cid"},
        "loadavg_before": b.get("loadavg_at_launch"),
        "loadavg_after": b.get("loadavg_at_end"),
        "peak_all_sessions_mb": results.get("memory", {}).get("peak_all_sessions_mb"),
        "mongo": results.get("mongo"),
        "reproduce": "NOTES_PIPELINE_STACK_PORT_OFFSET=… make up && "
        f".venv/bin/python benchmarks/full_backfill.py {' '.join(results['argv'])}",
        "results_file": results_file,
    }


def summary(results: dict) -> dict:
    b = results.get("backfill", {})
    t = results.get("transform", {})
    o = results.get("outcomes", {})
    a = results.get("activity_log_outcomes")
    return {
        "label": results.get("label"),
        "error": results.get("error"),
        "families": results.get("families"),
        "wall_s": b.get("wall_s"),
        "wall_s_by_family": b.get("wall_s_by_family"),
        "records_per_s": b.get("records_per_s"),
        "layout": b.get("layout"),
        "backfill_status": b.get("backfill_status"),
        "notes_per_s": b.get("notes_per_s"),
        "runs": b.get("runs"),
        "runs_by_status": b.get("runs_by_status"),
        "median_run_s": b.get("median_run_s"),
        "median_in_steps_s": b.get("median_in_steps_s"),
        "median_overhead_in_run_s": b.get("median_overhead_in_run_s"),
        "median_launch_to_start_s": b.get("median_launch_to_start_s"),
        "launch_to_first_run_created_s": b.get("launch_to_first_run_created_s"),
        "empty_cid_run": b.get("empty_cid_run"),
        "median_slot_s": b.get("median_slot_s"),
        "median_step_s": b.get("median_step_s"),
        "median_events_per_run": b.get("median_events_per_run"),
        "cpu_s": results.get("cpu_s"),
        "cpu_by_role": results.get("cpu_by_role"),
        "memory": results.get("memory"),
        "loadavg": [results.get("machine", {}).get("loadavg_at_start"), b.get("loadavg_at_end")],
        "nh3_ratio_all": t.get("ratio_all"),
        "nh3_ratio_sanitized": t.get("ratio_sanitized"),
        "outcomes": {
            k: o.get(k)
            for k in ("by_status", "totals", "adds_up_to_21000", "expected_notes", "adds_up")
        },
        "activity_log_outcomes": {k: v for k, v in a.items() if k != "per_cid"} if a else None,
    }


if __name__ == "__main__":
    sys.exit(main())
