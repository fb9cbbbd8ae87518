"""The scale benchmark (issue #14 item 4): one CID of 1k, 10k, 50k, 200k notes, end to end.

After one small unmeasured warm-up run (the daemon's run-worker zygote imports the code
location once, as on a deployment that has been running), for each selected size
(``--sizes``; ``--attachments`` adds the same sizes - or ``--attachments 1k,10k`` those - with
the ``full`` profile's mix of attachments, published as ``cid_<size>_attachments``):

  1. seeds the one-CID profile ``large-plain`` (or ``large``) resized to that many notes
     (``python -m devtools.synthetic seed --profile large-plain --notes N``: COPY into
     PostgreSQL, contacts into CDP, attachment objects into the CRM bucket), then ANALYZE;
  2. empties the CDP ``contact_notes`` collection and the CID's copied attachments, so the
     run starts from an empty collection like a first migration;
  3. launches the job ``migrate_cid`` for that one partition with ``dagster job launch``
     (tag ``notes_pipeline/force_rerun=true``, so a re-seeded CID is migrated again) on an
     instance whose ``dagster.yaml`` is the repository's: the run queue, then a real
     ``dagster-daemon`` that dequeues it and starts the run worker through the
     ``PreforkRunLauncher`` - the production path;
  4. samples the run worker (PID from the run tag ``notes_pipeline/run_worker_pid``) every
     0.2 s: RSS, the kernel's RSS high-water mark (VmHWM) and PSS;
  5. reads the run back from the event log: run created → end (end to end), step durations,
     each ``crm_notes_migration_batch_completed`` event of the loader (batch durations are
     the gaps between consecutive events; first/last = median of the first/last 5 full
     batches), and the ``cdp_notes_loaded`` / ``validation_report`` metadata (outcomes,
     attachments copied, the loader's own duration);
  6. the server's own ceiling for the same work: the run's planned documents (the
     ``normalized_notes`` output, attachment entries as the loader stored them) written with
     a bare pymongo ``bulk_write`` of ``$setOnInsert`` upserts into an empty collection of the
     same database with the same unique index, in batches of the loader's batch size, each
     split into bulk calls of the same size the product uses on this server, as many calls
     in flight as the product's ``CdpMongo.bulk_write_concurrency``, one batch at a time (the
     loader writes one batch at a time) - and the ratio loader / ceiling.

Results: ``.stack/bench/results/scale-<time>[-label].json`` (everything, incl. every batch's
duration); ``--publish`` also rewrites the ``scale`` section of
``benchmarks/results/latest.json`` (rows measured now replace the same rows; rows not measured
again are kept with their own date and commit; the targets are evaluated over all rows).

Isolation: own databases on the stack's PostgreSQL (``crm_scale``, ``identity_scale``,
``dagster_scale`` - recreated by every run of the script), MongoDB database ``cdp_scale`` on
the stack's server, buckets ``crm-attachments-scale`` / ``cdp-notes-scale`` and DAGSTER_HOME
``.stack/bench/scale/dagster_home``. Every process it starts (the daemon and what it spawns)
is stopped by PID at the end, also on failure or timeout.

Self-stopping: ``--timeout`` (default 3600 s) bounds the whole script; ``--run-timeout``
bounds one run, ``--ceiling-timeout`` one ceiling (a run or ceiling cut short is recorded as
pending, with the batches it finished).

Usage (stack up, e.g. ``make up``):
  .venv/bin/python benchmarks/scale.py --sizes 1k,10k,50k --publish
  .venv/bin/python benchmarks/scale.py --sizes 200k --run-timeout 1800 --publish
  .venv/bin/python benchmarks/scale.py --sizes 1k,10k --attachments --no-plain
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import procmon  # noqa: E402
import scale_results as sr  # noqa: E402
from full_backfill import (  # noqa: E402
    BenchTimeout,
    Procs,
    admin_conn,
    arm_timeout,
    clear_targets,
    ensure_buckets,
    ensure_database,
    grant_crm_reader,
    log,
    machine,
    stack_env,
    wait_for_daemon,
    with_db,
)
from results_file import LATEST, update_section  # noqa: E402

from devtools.synthetic.dataset import LARGE_CIDS  # noqa: E402

JOB = "migrate_cid"
SCALE_DIR = ROOT / ".stack" / "bench" / "scale"
RESULTS_DIR = ROOT / ".stack" / "bench" / "results"
CEILING_COLLECTION = "contact_notes_ceiling"
LOAD_STEP = "cdp_notes_loaded"
WORKER_PID_TAG = "notes_pipeline/run_worker_pid"
SAMPLE_S = 0.2
WARM_UP_NOTES = 100
RESERVE_S = 120  # of the hard timeout, kept for reading results and stopping processes


class NothingToRun(Exception):
    """Only --pending sizes were given: no stack process is started."""


# --------------------------------------------------------------------------- environment
def scale_env(base: dict[str, str]) -> dict[str, str]:
    """The stack's settings pointed at the benchmark's own databases, buckets and instance."""
    env = dict(base)
    s3 = env["NOTES_PIPELINE_S3_ENDPOINT_URL"]
    env.update(
        NOTES_PIPELINE_CRM_DSN=with_db(env["NOTES_PIPELINE_CRM_DSN"], "crm_scale"),
        NOTES_PIPELINE_CRM_ADMIN_DSN=with_db(env["NOTES_PIPELINE_CRM_ADMIN_DSN"], "crm_scale"),
        NOTES_PIPELINE_IDENTITY_DSN=with_db(env["NOTES_PIPELINE_IDENTITY_DSN"], "identity_scale"),
        DAGSTER_PG_DB="dagster_scale",
        DAGSTER_HOME=str(SCALE_DIR / "dagster_home"),
        NOTES_PIPELINE_MONGO_DB="cdp_scale",
        NOTES_PIPELINE_CRM_BUCKET="crm-attachments-scale",
        NOTES_PIPELINE_CDP_BUCKET="cdp-notes-scale",
        NOTES_PIPELINE_CRM_ATTACHMENT_BASE_URL=f"{s3}/crm-attachments-scale",
        NOTES_PIPELINE_ENABLED_CIDS="*",
        PYTHONUNBUFFERED="1",
    )
    # The stack's identity stand-in serves `identity`; this benchmark's users live in
    # `identity_scale`, read directly (the local fallback of notes_pipeline.deployment).
    env.pop("NOTES_PIPELINE_IDENTITY_URL", None)
    env.pop("NOTES_PIPELINE_IDENTITY_TOKEN", None)
    return env


def dagster_home(env: dict[str, str]) -> None:
    """DAGSTER_HOME with the repository's dagster.yaml (a symlink: exactly the same config)."""
    home = Path(env["DAGSTER_HOME"])
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "dagster.yaml").symlink_to(ROOT / "dagster.yaml")


def git_commit() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=12"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "unknown"


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def run_cmd(argv: list[str], env: dict[str, str], timeout: float, what: str) -> str:
    started = time.perf_counter()
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise RuntimeError(f"{what} failed (exit {out.returncode})")
    log(f"{what}: {time.perf_counter() - started:.1f} s")
    return out.stdout


# --------------------------------------------------------------------------- data
def seed(env: dict[str, str], profile: str, notes: int, timeout: float) -> dict:
    out = run_cmd(
        [sys.executable, "-m", "devtools.synthetic", "seed", "--profile", profile]
        + ["--notes", str(notes)],
        env,
        timeout,
        f"seed --profile {profile} --notes {notes}",
    )
    result = json.loads(out)
    grant_crm_reader(env, "crm_scale")
    with closing(admin_conn(env, "crm_scale")) as conn, conn.cursor() as cur:
        cur.execute("ANALYZE")  # fresh COPY: give the planner statistics, as a live CRM has
    return {k: result.get(k) for k in ("profile", "fingerprint", "rows", "objects", "timings")}


def company_of(env: dict[str, str], cid: str) -> str:
    import psycopg2

    with closing(psycopg2.connect(env["NOTES_PIPELINE_CRM_DSN"])) as conn, conn.cursor() as cur:
        cur.execute("SELECT company_sso_id FROM organizations WHERE id = %s", (int(cid),))
        row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"CID {cid} not seeded")
    return row[0]


def empty_target(env: dict[str, str], cid: str, company: str) -> dict:
    """Drop contact_notes (the run recreates it and its index) and the CID's copied objects."""
    from pymongo import MongoClient

    cleared = clear_targets(env, {cid: company})
    with MongoClient(env["NOTES_PIPELINE_MONGO_URI"]) as client:
        db = client[env["NOTES_PIPELINE_MONGO_DB"]]
        db.drop_collection("contact_notes")
        db.drop_collection(CEILING_COLLECTION)
    return cleared


# --------------------------------------------------------------------------- run worker
class WorkerSampler:
    """Samples one process's RSS, VmHWM (every sample) and PSS (every 5th) in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = procmon.start_time(pid)
        self.peak_rss_kb = self.peak_hwm_kb = self.peak_pss_kb = self.first_rss_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="worker-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.started is None or not procmon.alive(self.pid, self.started):
                return
            rss = procmon.rss_kb(self.pid)
            hwm = procmon.hwm_kb(self.pid)
            if self.samples % 5 == 0:
                self.peak_pss_kb = max(self.peak_pss_kb, procmon.pss_kb(self.pid))
            if rss and not self.first_rss_kb:
                self.first_rss_kb = rss
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.peak_hwm_kb = max(self.peak_hwm_kb, hwm)
            self.samples += 1
            self._stop.wait(SAMPLE_S)

    def start(self) -> WorkerSampler:
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=5)
        peak = max(self.peak_rss_kb, self.peak_hwm_kb)
        return {
            "pid": self.pid,
            "samples": self.samples,
            "peak_rss_mb": round(peak / 1024, 1) if peak else None,
            "peak_pss_mb": round(self.peak_pss_kb / 1024, 1) if self.peak_pss_kb else None,
            "start_rss_mb": round(self.first_rss_kb / 1024, 1) if self.first_rss_kb else None,
            "sampling": f"/proc every {SAMPLE_S} s: max(RSS, VmHWM); PSS every {5 * SAMPLE_S} s",
        }


def launch(env: dict[str, str], cid: str) -> tuple[str, float]:
    """Submit migrate_cid for one partition through the instance's run queue."""
    run_id = str(uuid.uuid4())
    tags = {
        "dagster/partition": cid,
        "notes_pipeline/force_rerun": "true",
        "notes_pipeline/benchmark": "scale",
    }
    submitted = time.time()
    run_cmd(
        [
            str(Path(sys.executable).parent / "dagster"),
            "job",
            "launch",
            "-w",
            str(ROOT / "workspace.yaml"),
            "-j",
            JOB,
            "--run-id",
            run_id,
            "--tags",
            json.dumps(tags),
        ],
        env,
        300,
        f"dagster job launch {JOB} --tags dagster/partition={cid}",
    )
    return run_id, submitted


def wait_run(instance, run_id: str, deadline: float, state: dict) -> tuple[dict, bool]:
    """Wait for the run to end (sampling its worker); on ``deadline`` cancel it.

    Returns (memory figures, finished in time).
    """
    sampler = None
    last_report = 0.0
    in_time = True
    while True:
        run = instance.get_run_by_id(run_id)
        if sampler is None and run is not None and WORKER_PID_TAG in run.tags:
            sampler = WorkerSampler(int(run.tags[WORKER_PID_TAG])).start()
            state["sampler"] = sampler
        if run is not None and run.is_finished:
            break
        if time.monotonic() > deadline:
            in_time = False
            log(f"run {run_id} over its time budget: cancelling")
            instance.run_coordinator.cancel_run(run_id)
            end = time.monotonic() + 90
            while time.monotonic() < end and not instance.get_run_by_id(run_id).is_finished:
                time.sleep(1)
            break
        if time.monotonic() - last_report > 30:
            status = run.status.value if run else "?"
            log(f"run {run_id[:8]}: {status}, {len(batch_events(instance, run_id))} batches")
            last_report = time.monotonic()
        time.sleep(SAMPLE_S if sampler is None else 1.0)
    memory = sampler.stop() if sampler else {}
    state.pop("sampler", None)
    return memory, in_time


def batch_events(instance, run_id: str) -> list[tuple[float, dict]]:
    found = []
    for entry in instance.all_logs(run_id):
        if entry.dagster_event is None and entry.step_key == LOAD_STEP:
            event = sr.batch_event(entry.user_message)
            if event is not None:
                found.append((entry.timestamp, event))
    return found


def metadata_values(metadata) -> dict:
    out = {}
    for key, value in (metadata or {}).items():
        out[key] = getattr(value, "value", value)
    return out


def read_run(instance, run_id: str) -> dict:
    """Timings, outcomes and batch events of one finished run, from the instance."""
    import dagster as dg

    record = instance.get_run_record_by_id(run_id)
    run = record.dagster_run
    logs = instance.all_logs(run_id)
    steps: dict[str, dict[str, float]] = {}
    loader: dict = {}
    outcomes = None
    progress: dict = {}
    errors = []
    for entry in logs:
        kind = entry.dagster_event_type
        if kind in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS):
            steps.setdefault(entry.step_key, {})[kind.value] = entry.timestamp
        elif kind == dg.DagsterEventType.STEP_FAILURE:
            errors.append(f"{entry.step_key}: {entry.message[:300]}")
        observation = entry.asset_observation
        if observation is not None and "records_total" in (observation.metadata or {}):
            progress = metadata_values(observation.metadata)
        mat = entry.asset_materialization
        if mat is not None:
            if mat.asset_key.path == [LOAD_STEP]:
                loader = metadata_values(mat.metadata)
            elif mat.asset_key.path == ["validation_report"]:
                outcomes = metadata_values(mat.metadata).get("outcomes")
    step_s = {
        key: round(t["STEP_SUCCESS"] - t["STEP_START"], 2)
        for key, t in steps.items()
        if "STEP_SUCCESS" in t and "STEP_START" in t
    }
    keep = (
        "status",
        "migrated",
        "skipped",
        "failed",
        "out_of_scope",
        "not_attempted",
        "source_total",
        "attachments_planned",
        "attachments_copied",
        "attachments_failed",
        "batches",
        "duration_seconds",
    )
    return {
        "run_id": run_id,
        "run": {
            "status": run.status.value,
            "created": record.create_timestamp.timestamp(),
            "start": record.start_time,
            "end": record.end_time,
        },
        "steps": step_s,
        "loader": {k: loader[k] for k in keep if k in loader},
        "outcomes": outcomes,
        "progress": progress,
        "errors": errors,
        "batch_events": batch_events(instance, run_id),
    }


# --------------------------------------------------------------------------- ceiling
def planned_documents(env: dict[str, str], cid: str, company: str) -> list[dict]:
    """The run's ready documents as the loader writes them: ``normalized_notes`` (the fs IO
    manager's output of the run) with the attachment entries the loader stored."""
    from pymongo import MongoClient

    path = Path(env["DAGSTER_HOME"]) / "storage" / "normalized_notes" / cid
    with path.open("rb") as fh:
        normalized = pickle.load(fh)  # written by this benchmark's own run
    with MongoClient(env["NOTES_PIPELINE_MONGO_URI"], tz_aware=False) as client:
        stored = {
            d["legacy_crm_note_id"]: d.get("attachments") or []
            for d in client[env["NOTES_PIPELINE_MONGO_DB"]]["contact_notes"].find(
                {"company_sso_id": company, "legacy_crm_note_id": {"$exists": True}},
                {"_id": 0, "legacy_crm_note_id": 1, "attachments": 1},
            )
        }
    docs = []
    for plan in normalized.ready:
        doc = dict(plan.document or {})
        doc["attachments"] = stored.get(plan.legacy_crm_note_id, [])
        docs.append(doc)
    return docs


def ceiling(env: dict[str, str], company: str, docs: list[dict], deadline: float) -> dict:
    """Bare pymongo upserts of ``docs`` into an empty collection with the product's index:
    batches of the loader's batch size, each as bulk calls of the product's size for this
    server (as many in flight as the product sends), one batch at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from pymongo import MongoClient, UpdateOne

    from notes_pipeline.contact_notes.settings import MigrationSettings
    from notes_pipeline.core.resources.mongo import CdpMongo
    from notes_pipeline.core.resources.mongo_indexes import (
        ensure_contact_notes_index,
        max_bulk_write_ops,
    )

    batch_size = MigrationSettings().batch_size
    concurrency = CdpMongo.model_fields["bulk_write_concurrency"].default
    pool = ThreadPoolExecutor(max_workers=concurrency)
    with pool, MongoClient(env["NOTES_PIPELINE_MONGO_URI"], tz_aware=False) as client:
        db = client[env["NOTES_PIPELINE_MONGO_DB"]]
        db.drop_collection("contact_notes")  # the loader's: the server holds what it held then
        db.drop_collection(CEILING_COLLECTION)
        coll = db[CEILING_COLLECTION]
        index_mode = ensure_contact_notes_index(coll)
        per_call = max_bulk_write_ops(coll)
        batch_s: list[float] = []
        sizes: list[int] = []
        cut_short = False
        try:
            for start in range(0, len(docs), batch_size):
                if time.monotonic() > deadline:
                    cut_short = True
                    break
                batch = docs[start : start + batch_size]
                requests = [
                    UpdateOne(
                        {"company_sso_id": company, "legacy_crm_note_id": d["legacy_crm_note_id"]},
                        {"$setOnInsert": d},
                        upsert=True,
                    )
                    for d in batch
                ]
                began = time.perf_counter()
                calls = [
                    pool.submit(coll.bulk_write, requests[i : i + per_call], ordered=False)
                    for i in range(0, len(requests), per_call)
                ]
                for call in calls:
                    call.result()
                batch_s.append(time.perf_counter() - began)
                sizes.append(len(batch))
            written = coll.count_documents({"company_sso_id": company})
        finally:
            db.drop_collection(CEILING_COLLECTION)
    row = sr.ceiling_row(sum(sizes), batch_s, sizes)
    row.update(
        batch_size=batch_size,
        ops_per_bulk_write=per_call,
        concurrency=concurrency,
        index_mode=index_mode,
        stored=written,
    )
    if cut_short:
        row["pending"] = f"cut short after {len(batch_s)} batches (time budget)"
    return row


# --------------------------------------------------------------------------- one CID
def measure(
    env, instance, notes: int, attachments: bool, args, deadline: float, state, ceiling_too=True
) -> dict:
    profile = "large" if attachments else "large-plain"
    cid = str(LARGE_CIDS[profile])
    key = sr.row_key(notes, attachments)
    out: dict = {"key": key, "notes": notes, "attachments": attachments, "cid": cid}
    out["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    out["commit"] = git_commit()
    log(f"=== {key}: seeding {profile} with {notes:,} notes")
    out["seed"] = seed(env, profile, notes, timeout=max(60, deadline - time.monotonic()))
    company = company_of(env, cid)
    out["cleared"] = empty_target(env, cid, company)
    if not instance.has_dynamic_partition("cid", cid):
        instance.add_dynamic_partitions("cid", [cid])
    load_before = loadavg()
    run_id, _submitted = launch(env, cid)
    state["run_id"] = run_id
    run_deadline = deadline - RESERVE_S
    if args.run_timeout:
        run_deadline = min(run_deadline, time.monotonic() + args.run_timeout)
    memory, in_time = wait_run(instance, run_id, run_deadline, state)
    state.pop("run_id", None)
    out.update(read_run(instance, run_id))
    out["memory"] = memory
    out["batches"] = sr.loader_batches(out.pop("batch_events"))
    out["loadavg"] = {"before": load_before, "after": loadavg()}
    log(
        f"{key}: run {out['run']['status']} in {sr._span(out['run']['created'], out['run']['end'])}"
        f" s, loader {out['loader'].get('duration_seconds')} s, "
        f"{out['batches']['batches']} batches, peak RSS {memory.get('peak_rss_mb')} MB"
    )
    if not in_time:
        progress = out.get("progress") or {}
        out["pending"] = (
            f"run cancelled at its time budget: {progress.get('records_processed', 0)} of "
            f"{progress.get('records_total', '?')} ready notes written in "
            f"{out['batches']['batches']} batches"
        )
        return out
    if out["run"]["status"] != "SUCCESS":
        out["error"] = f"run {out['run']['status']}: {out['errors']}"
        return out
    if args.no_ceiling or not ceiling_too:
        return out
    docs = planned_documents(env, cid, company)
    ceiling_deadline = deadline - RESERVE_S
    if args.ceiling_timeout:
        ceiling_deadline = min(ceiling_deadline, time.monotonic() + args.ceiling_timeout)
    log(f"{key}: ceiling over {len(docs):,} planned documents")
    out["ceiling"] = ceiling(env, company, docs, ceiling_deadline)
    out["loadavg"]["after_ceiling"] = loadavg()
    log(f"{key}: ceiling {out['ceiling']['notes_per_s']} notes/s ({out['ceiling']['seconds']} s)")
    return out


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--sizes",
        type=sr.parse_sizes,
        help="notes per CID, e.g. 1k,10k,50k (default 1k,10k,50k,200k; none with --pending)",
    )
    ap.add_argument(
        "--attachments",
        nargs="?",
        const="same",
        metavar="SIZES",
        help="also run with attachments (profile large): every size, or these of them (1k,10k)",
    )
    ap.add_argument("--no-plain", action="store_true", help="only the attachment runs")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the bare pymongo ceiling")
    ap.add_argument("--timeout", type=float, default=3600, help="hard limit for the whole script")
    ap.add_argument("--run-timeout", type=float, help="cancel one run after this many seconds")
    ap.add_argument("--ceiling-timeout", type=float, help="stop one ceiling after this long")
    ap.add_argument(
        "--pending",
        type=sr.parse_sizes,
        default=[],
        metavar="SIZES",
        help="do not run these sizes; record them as pending (with --reason) - rows already "
        "measured are never replaced by a pending one",
    )
    ap.add_argument("--reason", default="", help="why the --pending sizes are not measured")
    ap.add_argument("--label", default="", help="free text stored with the results")
    ap.add_argument("--publish", action="store_true", help="write the scale section of latest.json")
    args = ap.parse_args(argv)
    if args.sizes is None:
        args.sizes = [] if args.pending else sr.parse_sizes("1k,10k,50k,200k")
    return args


def rows_of(sizes: list[int], args: argparse.Namespace) -> list[tuple[int, bool]]:
    """(notes, attachments) of the rows the flags select for these sizes."""
    rows = [(n, False) for n in sizes if not args.no_plain]
    if args.attachments:
        extra = sizes if args.attachments == "same" else sr.parse_sizes(args.attachments)
        rows += [(n, True) for n in extra if n in sizes]
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    arm_timeout(args.timeout)

    base = stack_env()
    env = scale_env(base)
    plan = rows_of(args.sizes, args)
    pending = rows_of(args.pending, args) if args.pending else []
    if args.pending and not args.reason:
        sys.exit("--pending needs --reason")
    plan = [item for item in plan if item not in pending]
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "label": args.label,
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine(),
        "mongo": f"{base.get('NOTES_PIPELINE_MONGO_KIND')} "
        f"{base.get('NOTES_PIPELINE_FERRETDB_BACKEND', '')}".strip(),
        "plan": [sr.row_key(n, a) for n, a in plan],
        "rows": {},
    }
    procs = Procs()
    state: dict = {}
    instance = None
    exit_code = 1
    try:
        if not plan:
            raise NothingToRun
        ensure_database(env, "crm_scale")
        ensure_database(env, "identity_scale")
        ensure_database(env, "dagster_scale", recreate=True)
        os.environ.update(env)  # boto3, DagsterInstance.get() and pymongo read it
        ensure_buckets(env)
        dagster_home(env)
        import dagster as dg

        instance = dg.DagsterInstance.get()
        since = time.time()
        daemon = procs.start(
            "dagster-daemon",
            [
                str(Path(sys.executable).parent / "dagster-daemon"),
                "run",
                "-w",
                str(ROOT / "workspace.yaml"),
            ],
            env,
            SCALE_DIR / "logs" / "daemon.log",
        )
        wait_for_daemon(instance, daemon, since, min(deadline, time.monotonic() + 180))
        log(f"daemon ready ({time.time() - since:.1f} s)")
        # One small unmeasured run first: the daemon's run-worker zygote imports the code
        # location once (~10 s on 2 busy cores), as it has long done on a running deployment.
        warm = measure(env, instance, WARM_UP_NOTES, False, args, deadline, state, False)
        results["warm_up"] = {k: warm.get(k) for k in ("notes", "run", "steps", "memory")}
        for notes, attachments in plan:
            key = sr.row_key(notes, attachments)
            if time.monotonic() > deadline - RESERVE_S - 60:
                results["rows"][key] = {"pending": "not started: the script's time budget ran out"}
                continue
            try:
                results["rows"][key] = measure(
                    env, instance, notes, attachments, args, deadline, state
                )
            except Exception as exc:  # this size fails alone; a timeout ends the loop
                results["rows"][key] = {"pending": f"{type(exc).__name__}: {exc}"}
                log(f"{key} FAILED: {type(exc).__name__}: {exc}")
                if isinstance(exc, BenchTimeout):
                    raise
        exit_code = 0
    except NothingToRun:
        exit_code = 0
    except (Exception, KeyboardInterrupt) as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"
        log(f"FAILED: {results['error']}")
    finally:
        signal.alarm(0)
        if "sampler" in state:
            state["sampler"].stop()
        if instance is not None and "run_id" in state:
            run = instance.get_run_by_id(state["run_id"])
            if run is not None and not run.is_finished:
                log(f"cancelling run {state['run_id']}")
                instance.run_coordinator.cancel_run(state["run_id"])
        results["stopped"] = procs.stop_all()
        log(f"stopped: {results['stopped']}")
    results["script_s"] = round(time.monotonic() - t0, 1)
    rows = {
        sr.row_key(n, a): sr.pending_row(
            n, a, args.reason, date=results["date"], commit=results["commit"]
        )
        for n, a in pending
    }
    for notes, attachments in plan:
        key = sr.row_key(notes, attachments)
        measured = results["rows"].get(key, {})
        if "run" in measured:
            rows[key] = sr.shape_row(measured)
        else:
            reason = measured.get("pending") or results.get("error") or "not started"
            rows[key] = sr.pending_row(
                notes, attachments, reason, date=results["date"], commit=results["commit"]
            )
    results["published_rows"] = rows
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS_DIR / (
        "scale-"
        + datetime.now().strftime("%Y%m%dT%H%M%S")
        + (f"-{args.label}" if args.label else "")
        + ".json"
    )
    out_path.write_text(json.dumps(results, indent=2, default=str))
    if args.publish and rows:
        previous = json.loads(LATEST.read_text()).get("scale") if LATEST.exists() else None
        info = {
            "date": results["date"],
            "label": args.label,
            "reproduce": "NOTES_PIPELINE_STACK_PORT_OFFSET=… make up && "
            f".venv/bin/python benchmarks/scale.py {' '.join(results['argv'])}",
            "mongo": results["mongo"],
            "machine": results["machine"],
            "results_file": str(out_path.relative_to(ROOT)),
        }
        if not plan and previous:  # only pending rows: the last measurement's header stays
            info = {k: v for k, v in previous.items() if not k.startswith("cid_")}
            info.pop("targets", None)
        section = sr.merge_section(previous, rows, **info)
        log(f"published: {update_section('scale', section)}")
    print(json.dumps({"rows": rows, "targets": sr.evaluate_targets(rows)}, indent=2, default=str))
    log(f"results: {out_path}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
