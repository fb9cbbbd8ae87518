"""Fault-injection suite (issue #12 item 3): every fault on the local stack, each followed by a
re-run and the checks "0 duplicates, 0 lost, counts add up, status right" (RELIABILITY.md).

Faults (one function each, ``--faults`` picks some; CIDs of the `full` profile):
  kill9               SIGKILL of the run worker at a random point of the load, ROUNDS times on
                      one CID (rolled back before each round); the daemon's run monitoring
                      fails the dead run; re-run
  postgres_restart    the stack's PostgreSQL restarted while the extraction waits on its
                      first page (crm_notes locked until the restart); re-run
  mongo_restart       the stack's MongoDB server (FerretDB) restarted once the load has
                      written a batch; re-run
  s3_outage           the stack's S3 (moto) paused (SIGSTOP: port open, nothing answered;
                      a stop would wipe moto's in-memory buckets) from the second batch until
                      a batch has been written meanwhile; notes are written, the attachments
                      of those batches fail with codes; re-run (repair checked once the load
                      reports `attachments_repaired`)
  daemon_restart      `dagster-daemon` SIGKILLed during a backfill of 20 CIDs and started
                      again; the backfill completes
  concurrent_writers  two `dagster asset materialize` processes load one CID at once,
                      bypassing the run queue (released together from the CRM lock)
  repeat_backfills    three backfills of all 130 CIDs, each from an empty CDP (forced
                      re-runs); `contact_notes` identical (hash per legacy id, `_id` excluded)

Setup, as benchmarks/full_backfill.py: its own databases on the stack's PostgreSQL (crm_rel,
identity_rel, dagster_rel - recreated on every run - and the CDP database cdp_rel on the
stack's MongoDB), its own buckets (crm-attachments-rel, cdp-notes-rel), its own DAGSTER_HOME
(.stack/rel/dagster_home, linking the repository's dagster.yaml); the `full` profile seeded
there; a real `dagster-daemon run` and `dagster-webserver`; runs launched through GraphQL as
the UI does. The faults act on the stack's own services (scripts/stack.sh restart|pause|
resume), so nothing else should use that stack meanwhile. 127.0.0.1 only; every wait is
bounded; the whole script stops at --timeout (default 3600 s) and stops every process it
started, by PID. Results: .stack/rel/results/*.json; --publish writes the `reliability`
section of benchmarks/results/latest.json.

Usage (after `bash scripts/stack.sh up`):
  .venv/bin/python benchmarks/reliability.py --publish
  .venv/bin/python benchmarks/reliability.py --faults kill9 --kill-rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import full_backfill as fb  # noqa: E402
from results_file import update_section  # noqa: E402

from devtools import faults  # noqa: E402

REL_DIR = ROOT / ".stack" / "rel"
FULL_CIDS = fb.FULL_CIDS
KILL_CID, PG_CID, MONGO_CID, S3_CID, CONCURRENT_CID = "2003", "2005", "2002", "2006", "2001"
DAEMON_CIDS = [str(c) for c in range(2011, 2031)]
FAULTS = (
    "kill9",
    "postgres_restart",
    "mongo_restart",
    "s3_outage",
    "daemon_restart",
    "concurrent_writers",
    "repeat_backfills",
)
RUN_TIMEOUT_S = 600.0
LAUNCH_RUN = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
LAUNCH_BACKFILL = fb.LAUNCH_MUTATION


def log(msg: str) -> None:
    fb.log(msg)


# --------------------------------------------------------------------------- context
@dataclass
class Ctx:
    """What every fault needs: environments, the instance, clients, servers, the webserver."""

    env: dict[str, str]  # the script's own databases / buckets / DAGSTER_HOME
    caller_env: dict[str, str]  # the caller's environment (scripts/stack.sh: port offset)
    procs: fb.Procs
    deadline: float
    instance: Any = None
    notes: Any = None  # CDP contact_notes
    s3: Any = None
    port: int = 0
    location: str = ""
    repo: str = ""
    rng: random.Random = field(default_factory=lambda: random.Random(12))

    def remaining(self, cap: float) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise fb.BenchTimeout("hard timeout reached")
        return min(cap, left)

    @property
    def stack_dir(self) -> Path:
        return Path(self.caller_env.get("NOTES_PIPELINE_STACK_DIR") or ROOT / ".stack")


def rel_env(base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    s3 = env["NOTES_PIPELINE_S3_ENDPOINT_URL"]
    env.update(
        NOTES_PIPELINE_CRM_DSN=fb.with_db(env["NOTES_PIPELINE_CRM_DSN"], "crm_rel"),
        NOTES_PIPELINE_CRM_ADMIN_DSN=fb.with_db(env["NOTES_PIPELINE_CRM_ADMIN_DSN"], "crm_rel"),
        NOTES_PIPELINE_IDENTITY_DSN=fb.with_db(env["NOTES_PIPELINE_IDENTITY_DSN"], "identity_rel"),
        DAGSTER_PG_DB="dagster_rel",
        DAGSTER_HOME=str(REL_DIR / "dagster_home"),
        NOTES_PIPELINE_MONGO_DB="cdp_rel",
        NOTES_PIPELINE_CRM_BUCKET="crm-attachments-rel",
        NOTES_PIPELINE_CDP_BUCKET="cdp-notes-rel",
        NOTES_PIPELINE_CRM_ATTACHMENT_BASE_URL=f"{s3}/crm-attachments-rel",
        NOTES_PIPELINE_ENABLED_CIDS="*",
        PYTHONUNBUFFERED="1",
    )
    # users live in identity_rel, read directly (the local fallback of resource selection)
    env.pop("NOTES_PIPELINE_IDENTITY_URL", None)
    env.pop("NOTES_PIPELINE_IDENTITY_TOKEN", None)
    return env


# --------------------------------------------------------------------------- runs
def graphql(ctx: Ctx, query: str, variables: dict) -> dict:
    """GraphQL on the webserver; retried only while the webserver cannot be reached (a
    request that reached it is never sent twice: a launch could run twice)."""
    import urllib.error

    for attempt in range(30):
        try:
            return fb.graphql(ctx.port, query, variables)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            if isinstance(exc, urllib.error.HTTPError) or attempt == 29:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def launch(ctx: Ctx, job: str, run_config: dict, tags: list[dict[str, str]]) -> str:
    """``job`` through the run queue, as the UI's Launchpad does; returns the run id."""
    result = graphql(
        ctx,
        LAUNCH_RUN,
        {
            "executionParams": {
                "selector": {
                    "repositoryLocationName": ctx.location,
                    "repositoryName": ctx.repo,
                    "jobName": job,
                },
                "runConfigData": run_config,
                "executionMetadata": {"tags": tags},
            }
        },
    )["launchPipelineExecution"]
    if result["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launch failed: {result}")
    return result["run"]["runId"]


def submit(ctx: Ctx, cid: str, *, batch_size: int | None = None, force: bool = False) -> str:
    """``migrate_cid`` for ``cid`` through the run queue, as the UI's Materialize does."""
    tags = [{"key": "dagster/partition", "value": cid}]
    if force:
        tags.append({"key": faults_force_tag(), "value": "true"})
    config = faults.settings_run_config(batch_size=batch_size) if batch_size else {}
    return launch(ctx, "migrate_cid", config, tags)


def faults_force_tag() -> str:
    from notes_pipeline.core.status import FORCE_RERUN_TAG

    return FORCE_RERUN_TAG


def rollback(ctx: Ctx, cid: str) -> None:
    """The job `rollback_cid` through the queue (Ops' rollback), waited for."""
    from notes_pipeline.core.rollback import confirmation_phrase

    confirm = confirmation_phrase(cid)
    config = {"ops": {"rollback_cid_op": {"config": {"cid": cid, "confirm": confirm}}}}
    run = wait_run(ctx, launch(ctx, "rollback_cid", config, []))
    if run.status.value != "SUCCESS":
        raise RuntimeError(f"rollback of CID {cid} ended {run.status.value}")


def wait_run(ctx: Ctx, run_id: str, cap: float = RUN_TIMEOUT_S):
    return faults.wait_for(
        lambda: faults.finished_run(ctx.instance, run_id),
        f"run {run_id} to end",
        ctx.remaining(cap),
        interval_s=0.5,
    )


def count(ctx: Ctx, cid: str) -> int:
    company = faults.crm_company(ctx.env["NOTES_PIPELINE_CRM_DSN"], cid)
    return ctx.notes.count_documents({"company_sso_id": company})


def check(ctx: Ctx, cid: str, expected: str = "completed_success") -> faults.CidCheck:
    result = faults.check_cid(
        ctx.instance,
        cid,
        crm_dsn=ctx.env["NOTES_PIPELINE_CRM_DSN"],
        notes_collection=ctx.notes,
        s3_client=ctx.s3,
        expected_status=expected,
    )
    log(
        f"  check CID {cid}: dup {result.duplicates}, lost {result.lost}, counts "
        f"{'add up' if result.counts_add_up else 'DO NOT add up'}, status {result.status}"
        + (f" PROBLEMS {result.problems}" if result.problems else "")
    )
    return result


def cli_status(ctx: Ctx, cid: str) -> dict:
    """`notes-migration status --cid CID --json` (the command Ops run)."""
    out = subprocess.run(
        [str(Path(sys.executable).with_name("notes-migration")), "status", "--cid", cid, "--json"],
        cwd=ROOT,
        env=ctx.env,
        capture_output=True,
        text=True,
        timeout=ctx.remaining(120),
        check=True,
    )
    return json.loads(out.stdout)


def loaded(ctx: Ctx, cid: str, run_id: str) -> dict:
    return faults.latest_metadata(ctx.instance, "cdp_notes_loaded", cid, run_id)


def failure_summary(ctx: Ctx, run_id: str) -> str:
    """The first step failure of a run (step and exception class), or ''."""
    import dagster as dg

    for record in ctx.instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_FAILURE
    ).records:
        entry = record.event_log_entry
        error = entry.dagster_event.event_specific_data.error
        while error.cause is not None:  # the user code's exception, not Dagster's wrapper
            error = error.cause
        return f"{entry.step_key}: {error.cls_name}: {(error.message or '').splitlines()[0][:160]}"
    return ""


def rerun_and_check(ctx: Ctx, cid: str, **submit_args) -> dict:
    """Re-run ``cid`` (forced when it is completed_success), then the checks."""
    from notes_pipeline.contact_notes.monitor import STATUS_ASSETS
    from notes_pipeline.core.status import cid_status

    before = cid_status(ctx.instance, cid, STATUS_ASSETS).status
    run_id = submit(ctx, cid, force=before == "completed_success", **submit_args)
    run = wait_run(ctx, run_id)
    result = check(ctx, cid)
    cli = cli_status(ctx, cid)
    if cli.get("status") != result.status:
        result.problems.append(f"notes-migration status says {cli.get('status')}")
    return {
        "status_before_rerun": str(before),
        "rerun": {"run_id": run_id, "status": run.status.value, "load": loaded(ctx, cid, run_id)},
        "check": result.as_dict(),
        "cli_status": cli.get("status"),
    }


def ready_of(check_dict: dict) -> int:
    """Notes of the CID in CDP when the load completes (migrated + skipped)."""
    return check_dict["outcomes"].get("migrated", 0) + check_dict["outcomes"].get("skipped", 0)


def summary_of(checks: list[dict]) -> dict:
    return {
        "duplicates": sum(c["duplicates"] for c in checks),
        "lost": sum(c["lost"] for c in checks),
        "checks_ok": all(c["ok"] for c in checks),
    }


# --------------------------------------------------------------------------- faults
def fault_kill9(ctx: Ctx, rounds: int) -> dict:
    """SIGKILL the run worker at a random point of the load, ``rounds`` times on one CID."""
    cid = KILL_CID
    crm = faults.crm_notes(ctx.env["NOTES_PIPELINE_CRM_DSN"], cid)
    in_scope = sum(1 for person, kind in crm.values() if person and kind in (1, 6))
    results = []
    for round_no in range(rounds):
        rollback(ctx, cid)
        target = 0 if round_no == 0 else ctx.rng.randrange(1, int(in_scope * 0.8))
        run_id = submit(ctx, cid, batch_size=50)
        pid = faults.wait_for(
            lambda run_id=run_id: faults.run_worker_pid(ctx.instance, run_id),
            "the run worker's pid",
            ctx.remaining(300),
            interval_s=0.2,
        )
        faults.wait_for(
            lambda run_id=run_id, target=target: (
                faults.step_started(ctx.instance, run_id) and count(ctx, cid) >= target
            ),
            f"{target} notes in CDP",
            ctx.remaining(RUN_TIMEOUT_S),
            interval_s=0.02,
            give_up=lambda run_id=run_id: faults.run_ended(ctx.instance, run_id),
        )
        killed_at = time.monotonic()
        if not faults.kill9(pid):
            raise RuntimeError(f"round {round_no}: worker {pid} gone before the kill")
        present = count(ctx, cid)
        dead = faults.wait_for(
            lambda run_id=run_id: faults.finished_run(ctx.instance, run_id),
            "run monitoring to fail the dead run",
            ctx.remaining(300),
            interval_s=0.5,
        )
        detected_s = round(time.monotonic() - killed_at, 1)
        after = rerun_and_check(ctx, cid, batch_size=50)
        load = after["rerun"]["load"]
        honest = load.get("skipped") == present and load.get("migrated", 0) + load.get(
            "skipped", 0
        ) == ready_of(after["check"])
        if not honest:
            after["check"]["problems"].append(
                f"re-run counts: skipped {load.get('skipped')} vs {present} left by the dead run"
            )
            after["check"]["ok"] = False
        log(
            f"kill9 round {round_no}: target {target}, {present} notes in CDP at the kill, "
            f"run marked {dead.status.value} after {detected_s} s; re-run "
            f"migrated {load.get('migrated')} skipped {load.get('skipped')}"
        )
        results.append(
            {
                "round": round_no,
                "target_notes": target,
                "notes_in_cdp_at_kill": present,
                "dead_run_status": dead.status.value,
                "dead_run_marked_failed_after_s": detected_s,
                "rerun_counts_honest": honest,
                **after,
            }
        )
    checks = [r["check"] for r in results]
    return {
        "cid": cid,
        "injected": len(results),
        **summary_of(checks),
        "mid_load_kills": sum(
            1 for r in results if 0 < r["notes_in_cdp_at_kill"] < ready_of(r["check"])
        ),
        "rounds": results,
    }


def fault_postgres_restart(ctx: Ctx) -> dict:
    """PostgreSQL restarted while the extraction waits on its first page of notes."""
    cid = PG_CID
    with faults.crm_notes_locked(ctx.env["NOTES_PIPELINE_CRM_ADMIN_DSN"]) as waiting:
        run_id = submit(ctx, cid)
        faults.wait_for(
            lambda: waiting() >= 1,
            "the extraction to wait on crm_notes",
            ctx.remaining(300),
            interval_s=0.1,
            give_up=lambda: faults.run_ended(ctx.instance, run_id),
        )
        restart_s = faults.stack_service("restart", "postgres", ctx.caller_env)
    log(f"postgres restarted in {restart_s:.1f} s during the extraction of CID {cid}")
    run = wait_run(ctx, run_id)
    first = {
        "run_id": run_id,
        "status": run.status.value,
        "failure": failure_summary(ctx, run_id),
        "notes_in_cdp": count(ctx, cid),
    }
    log(f"  faulted run: {first}")
    after = rerun_and_check(ctx, cid)
    return {
        "cid": cid,
        "injected": 1,
        "restart_s": round(restart_s, 1),
        "faulted_run": first,
        "daemon_alive": daemon_alive(ctx),
        **summary_of([after["check"]]),
        **after,
    }


def fault_mongo_restart(ctx: Ctx) -> dict:
    """The MongoDB server (FerretDB) restarted once the load has written a batch."""
    cid = MONGO_CID
    run_id = submit(ctx, cid, batch_size=50)
    faults.wait_for(
        lambda: count(ctx, cid) >= 50,
        "a first batch in CDP",
        ctx.remaining(RUN_TIMEOUT_S),
        interval_s=0.05,
        give_up=lambda: faults.run_ended(ctx.instance, run_id),
    )
    at_restart = count(ctx, cid)
    restart_s = faults.stack_service("restart", "mongo", ctx.caller_env)
    log(f"mongo restarted in {restart_s:.1f} s with {at_restart} notes of CID {cid} in CDP")
    run = wait_run(ctx, run_id)
    first = {
        "run_id": run_id,
        "status": run.status.value,
        "failure": failure_summary(ctx, run_id),
        "notes_in_cdp_at_restart": at_restart,
        "load": loaded(ctx, cid, run_id),
        "status_after": cli_status(ctx, cid).get("status"),
    }
    log(f"  faulted run: {json.dumps(first, default=str)[:600]}")
    after = rerun_and_check(ctx, cid, batch_size=50)
    return {
        "cid": cid,
        "injected": 1,
        "restart_s": round(restart_s, 1),
        "faulted_run": first,
        **summary_of([after["check"]]),
        **after,
    }


def fault_s3_outage(ctx: Ctx) -> dict:
    """S3 paused from the second batch until one batch has been written meanwhile."""
    from notes_pipeline.core.vocabulary import AttachmentCode

    cid = S3_CID
    batch = 20
    run_id = submit(ctx, cid, batch_size=batch)
    faults.wait_for(
        lambda: count(ctx, cid) >= batch,
        "a first batch in CDP",
        ctx.remaining(RUN_TIMEOUT_S),
        interval_s=0.05,
        give_up=lambda: faults.run_ended(ctx.instance, run_id),
    )
    faults.stack_service("pause", "s3", ctx.caller_env)
    paused_at = time.monotonic()
    at_pause = count(ctx, cid)
    try:
        # two more batches: the second one copied its attachments while S3 was away
        faults.wait_for(
            lambda: count(ctx, cid) >= at_pause + 2 * batch,
            "a whole batch copied and written while S3 is away",
            ctx.remaining(600),
            interval_s=0.2,
            give_up=lambda: faults.run_ended(ctx.instance, run_id),
        )
    finally:
        faults.stack_service("resume", "s3", ctx.caller_env)
    outage_s = round(time.monotonic() - paused_at, 1)
    during = count(ctx, cid) - at_pause
    log(f"S3 away {outage_s} s; {during} notes of CID {cid} written meanwhile")
    run = wait_run(ctx, run_id)
    load = loaded(ctx, cid, run_id)
    by_reason = load.get("attachments_failed_by_reason") or {}
    first = {
        "run_id": run_id,
        "status": run.status.value,
        "notes_written_during_outage": during,
        "load": load,
        "report_status": cli_status(ctx, cid).get("status"),
        "failure_codes_known": all(code in set(AttachmentCode) for code in by_reason),
    }
    notes_check = check(ctx, cid)  # the notes themselves: all written, counts add up
    outage_codes = (
        AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED,
        AttachmentCode.ATTACHMENT_UPLOAD_FAILED,
    )
    first["attachments_failed_by_the_outage"] = sum(by_reason.get(c, 0) for c in outage_codes)
    if not first["attachments_failed_by_the_outage"] or not first["failure_codes_known"]:
        notes_check.problems.append("the outage failed no attachment with a known code")
    log(f"  faulted run: {run.status.value}, attachments failed by reason {by_reason}")
    after = rerun_and_check(ctx, cid, batch_size=batch)
    rerun_load = after["rerun"]["load"]
    repair: dict[str, Any] = {"feature_present": "attachments_repaired" in rerun_load}
    if repair["feature_present"]:
        repair["repaired"] = rerun_load["attachments_repaired"]
        repair["still_failed_by_reason"] = rerun_load.get("attachments_failed_by_reason")
        repair["ok"] = (
            rerun_load["attachments_repaired"] >= first["attachments_failed_by_the_outage"]
        )
        if not repair["ok"]:
            after["check"]["problems"].append(f"attachments not repaired: {repair}")
            after["check"]["ok"] = False
    else:
        repair["note"] = "no attachments_repaired in the load metadata yet (repair pending)"
    return {
        "cid": cid,
        "injected": 1,
        "outage_s": outage_s,
        "faulted_run": first,
        "check_after_fault": notes_check.as_dict(),
        "attachment_repair": repair,
        **summary_of([notes_check.as_dict(), after["check"]]),
        **after,
    }


def daemon_alive(ctx: Ctx) -> bool:
    name = next((n for n in reversed(ctx.procs.started) if n.startswith("dagster-daemon")), None)
    return bool(name) and ctx.procs.started[name][0].poll() is None


def start_daemon(ctx: Ctx, name: str) -> None:
    since = time.time()
    proc = ctx.procs.start(
        name,
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
        ctx.env,
        REL_DIR / "logs" / f"{name}.log",
    )
    fb.wait_for_daemon(ctx.instance, proc, since, time.monotonic() + ctx.remaining(300))


def launch_backfill(ctx: Ctx, cids: list[str], title: str, force: bool) -> str:
    params = {
        "selector": {
            "partitionSetName": "migrate_cid_partition_set",
            "repositorySelector": {
                "repositoryLocationName": ctx.location,
                "repositoryName": ctx.repo,
            },
        },
        "assetSelection": [{"path": [a]} for a in fb.ASSETS],
        "partitionNames": cids,
        "fromFailure": False,
        "tags": [{"key": faults_force_tag(), "value": "true"}] if force else [],
        "title": title,
    }
    result = graphql(ctx, LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"launchPartitionBackfill: {result}")
    return result["backfillId"]


def backfill_runs(ctx: Ctx, backfill_id: str) -> list:
    import dagster as dg

    return ctx.instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))


def wait_backfill(ctx: Ctx, backfill_id: str, expected: int, cap: float) -> dict:
    """Until every run of the backfill ended and the daemon marked it completed."""
    started = time.monotonic()

    def done():
        runs = backfill_runs(ctx, backfill_id)
        backfill = ctx.instance.get_backfill(backfill_id)
        finished = len(runs) >= expected and all(r.is_finished for r in runs)
        return finished and backfill.status.value.startswith("COMPLETED")

    faults.wait_for(done, f"backfill {backfill_id}", ctx.remaining(cap), interval_s=2.0)
    runs = backfill_runs(ctx, backfill_id)
    statuses: dict[str, int] = {}
    for run in runs:
        statuses[run.status.value] = statuses.get(run.status.value, 0) + 1
    return {
        "backfill_id": backfill_id,
        "backfill_status": ctx.instance.get_backfill(backfill_id).status.value,
        "runs": len(runs),
        "runs_by_status": statuses,
        "wait_s": round(time.monotonic() - started, 1),
    }


def fault_daemon_restart(ctx: Ctx) -> dict:
    """dagster-daemon SIGKILLed during a backfill of 20 CIDs, then started again."""
    cids = DAEMON_CIDS
    launched = time.monotonic()
    backfill_id = launch_backfill(ctx, cids, "reliability: daemon restart", force=True)
    faults.wait_for(
        lambda: (
            sum(r.is_finished for r in backfill_runs(ctx, backfill_id)) >= 3
            and any(not r.is_finished for r in backfill_runs(ctx, backfill_id))
        ),
        "3 runs of the backfill finished and more in flight",
        ctx.remaining(600),
        interval_s=0.5,
    )
    runs = backfill_runs(ctx, backfill_id)
    at_kill = {
        "runs_created": len(runs),
        "finished": sum(r.is_finished for r in runs),
        "after_launch_s": round(time.monotonic() - launched, 1),
    }
    name = next(n for n in reversed(ctx.procs.started) if n.startswith("dagster-daemon"))
    proc, _ = ctx.procs.started[name]
    faults.kill9(proc.pid)
    proc.wait(timeout=30)
    log(f"dagster-daemon (pid {proc.pid}) SIGKILLed: {at_kill}")
    start_daemon(ctx, "dagster-daemon-2")
    result = wait_backfill(ctx, backfill_id, len(cids), 900)
    log(f"  backfill after the restart: {result}")
    checks = [check(ctx, cid).as_dict() for cid in cids]
    complete = result["backfill_status"] == "COMPLETED_SUCCESS" and result["runs_by_status"] == {
        "SUCCESS": len(cids)
    }
    return {
        "cids": cids,
        "injected": 1,
        "at_kill": at_kill,
        "backfill": result,
        "backfill_completed": complete,
        **summary_of(checks),
        "checks_ok": all(c["ok"] for c in checks) and complete,
        "checks": [c for c in checks if not c["ok"]],
    }


def fault_concurrent_writers(ctx: Ctx) -> dict:
    """Two `dagster asset materialize` processes load one CID at once (no run queue)."""
    import dagster as dg

    cid = CONCURRENT_CID
    argv = [
        str(Path(sys.executable).with_name("dagster")),
        "asset",
        "materialize",
        "-m",
        "notes_pipeline.definitions",
        "--select",
        ",".join(fb.ASSETS),
        "--partition",
        cid,
    ]
    since = time.time()
    with faults.crm_notes_locked(ctx.env["NOTES_PIPELINE_CRM_ADMIN_DSN"]) as waiting:
        writers = [
            ctx.procs.start(f"writer-{i}", argv, ctx.env, REL_DIR / "logs" / f"writer-{i}.log")
            for i in (1, 2)
        ]
        faults.wait_for(
            lambda: waiting() >= 2,
            "both writers to wait on their first CRM read",
            ctx.remaining(300),
            interval_s=0.2,
            give_up=lambda: any(w.poll() is not None for w in writers) and "a writer exited",
        )
    for i, writer in enumerate(writers, start=1):
        writer.wait(timeout=ctx.remaining(RUN_TIMEOUT_S))
        ctx.procs.started.pop(f"writer-{i}", None)
    runs = [
        r
        for r in ctx.instance.get_runs(dg.RunsFilter(tags={"dagster/partition": cid}))
        if r.run_id
        and ctx.instance.get_run_record_by_id(r.run_id).create_timestamp.timestamp() >= since
    ]
    loads = [loaded(ctx, cid, r.run_id) for r in runs]
    result = check(ctx, cid)
    ready = faults.ready_count(result)
    migrated = [load.get("migrated", 0) for load in loads]
    honest = (
        len(runs) == 2
        and sum(migrated) == result.in_cdp
        and all(load.get("migrated", 0) + load.get("skipped", 0) == ready for load in loads)
    )
    if not honest:
        result.problems.append(f"counts not honest: migrated {migrated}, in CDP {result.in_cdp}")
    log(f"concurrent writers on CID {cid}: migrated {migrated}, stored {result.in_cdp}")
    return {
        "cid": cid,
        "injected": 1,
        "runs": [{"run_id": r.run_id, "status": r.status.value} for r in runs],
        "migrated_by_run": migrated,
        "skipped_by_run": [load.get("skipped", 0) for load in loads],
        "counts_honest": honest,
        **summary_of([result.as_dict()]),
        "check": result.as_dict(),
    }


def fault_repeat_backfills(ctx: Ctx, rounds: int, cids: list[str]) -> dict:
    """``rounds`` backfills of ``cids``, each from an empty CDP; identical contact_notes."""
    by_cid = fb.companies(ctx.env, cids)
    prints = []
    results = []
    for round_no in range(rounds):
        cleared = fb.clear_targets(ctx.env, by_cid)
        backfill_id = launch_backfill(ctx, cids, f"reliability: repeat {round_no + 1}", force=True)
        result = wait_backfill(ctx, backfill_id, len(cids), 1800)
        checks = [check(ctx, cid).as_dict() for cid in cids]
        fingerprint = faults.notes_fingerprint(ctx.notes, by_cid.values())
        prints.append(fingerprint)
        outcomes: dict[str, int] = {}
        for c in checks:
            for k, v in c["outcomes"].items():
                outcomes[k] = outcomes.get(k, 0) + v
        log(f"repeat backfill {round_no + 1}: {result}, outcomes {outcomes}")
        results.append(
            {
                "round": round_no + 1,
                "cleared": cleared,
                **result,
                "notes": len(fingerprint),
                "outcomes": outcomes,
                **summary_of(checks),
                "failed_checks": [c for c in checks if not c["ok"]],
            }
        )
    identical = all(p == prints[0] for p in prints[1:])
    differing = sorted(
        {k for p in prints[1:] for k in set(p) | set(prints[0]) if p.get(k) != prints[0].get(k)}
    )
    return {
        "cids": len(cids),
        "injected": rounds,
        "duplicates": sum(r["duplicates"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "identical": identical,
        "differing_notes": differing[:20],
        "checks_ok": identical and all(r["checks_ok"] for r in results),
        "rounds": results,
    }


# --------------------------------------------------------------------------- main
def setup(ctx: Ctx, no_seed: bool) -> None:
    import boto3
    import dagster as dg
    from pymongo import MongoClient

    env = ctx.env
    fb.ensure_database(env, "crm_rel")
    fb.ensure_database(env, "identity_rel")
    fb.ensure_database(env, "dagster_rel", recreate=True)
    os.environ.update(env)
    fb.ensure_buckets(env)
    if no_seed and fb.crm_objects(env) != fb.FULL_OBJECTS:
        log("--no-seed, but the CRM bucket does not hold the full profile: seeding")
        no_seed = False
    if not no_seed:
        fb.run_cmd(
            [sys.executable, "-m", "devtools.synthetic", "seed", "--profile", "full"],
            env,
            ctx.remaining(900),
            "seed --profile full",
        )
    fb.grant_crm_reader(env, "crm_rel")
    by_cid = fb.companies(env, FULL_CIDS)
    log(f"cleared: {fb.clear_targets(env, by_cid)}")
    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(ROOT / "dagster.yaml")
    ctx.instance = dg.DagsterInstance.get()
    ctx.instance.add_dynamic_partitions("cid", FULL_CIDS)
    client = MongoClient(env["NOTES_PIPELINE_MONGO_URI"])
    ctx.notes = client[env["NOTES_PIPELINE_MONGO_DB"]]["contact_notes"]
    ctx.s3 = boto3.client("s3", endpoint_url=env["NOTES_PIPELINE_S3_ENDPOINT_URL"])
    start_daemon(ctx, "dagster-daemon")
    ctx.port = fb.free_port()
    web = ctx.procs.start(
        "dagster-webserver",
        [
            str(Path(sys.executable).with_name("dagster-webserver")),
            *("-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(ctx.port)),
        ],
        env,
        REL_DIR / "logs" / "webserver.log",
    )
    ctx.location, ctx.repo = fb.wait_for_webserver(
        ctx.port, web, time.monotonic() + ctx.remaining(300)
    )
    log(f"daemon + webserver up (port {ctx.port})")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--timeout", type=float, default=3600, help="hard limit for the whole script")
    ap.add_argument("--faults", default=",".join(FAULTS), help="comma-separated subset")
    ap.add_argument("--kill-rounds", type=int, default=10)
    ap.add_argument("--repeat-rounds", type=int, default=3)
    ap.add_argument("--repeat-cids", help="e.g. 2001-2010 (default: all 130 of `full`)")
    ap.add_argument("--no-seed", action="store_true", help="reuse crm_rel when it is complete")
    ap.add_argument("--seed", type=int, default=12, help="random kill points")
    ap.add_argument("--publish", action="store_true", help="write the `reliability` section")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    chosen = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(chosen) - set(FAULTS)
    if unknown:
        sys.exit(f"unknown faults: {sorted(unknown)} (known: {', '.join(FAULTS)})")
    t0 = time.monotonic()
    fb.arm_timeout(args.timeout)
    caller_env = dict(os.environ)
    ctx = Ctx(
        env=rel_env(fb.stack_env()),
        caller_env=caller_env,
        procs=fb.Procs(),
        deadline=t0 + args.timeout - 60,
        rng=random.Random(args.seed),
    )
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "machine": fb.machine(),
        "mongo": ctx.env.get("NOTES_PIPELINE_MONGO_KIND"),
        "activity_logs": activity_logs_family(),
        "faults": {},
    }
    exit_code = 1
    try:
        setup(ctx, args.no_seed)
        repeat_cids = fb.transform_cost.parse_cids(args.repeat_cids) if args.repeat_cids else None
        for name in chosen:
            log(f"=== {name}")
            started = time.monotonic()
            if name == "kill9":
                outcome = fault_kill9(ctx, args.kill_rounds)
            elif name == "repeat_backfills":
                outcome = fault_repeat_backfills(ctx, args.repeat_rounds, repeat_cids or FULL_CIDS)
            else:
                outcome = globals()[f"fault_{name}"](ctx)
            outcome["seconds"] = round(time.monotonic() - started, 1)
            results["faults"][name] = outcome
            log(
                f"=== {name}: injected {outcome['injected']}, duplicates "
                f"{outcome['duplicates']}, lost {outcome['lost']}, ok {outcome['checks_ok']} "
                f"({outcome['seconds']} s)"
            )
        exit_code = 0 if all(f["checks_ok"] for f in results["faults"].values()) else 1
    except (Exception, KeyboardInterrupt) as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"
        log(f"FAILED: {results['error']}")
    finally:
        signal.alarm(0)
        for service in ("s3",):  # never leave a paused service behind
            pid = faults.stack_pid(service, ctx.stack_dir)
            if pid is not None:
                os.kill(pid, signal.SIGCONT)
        results["stopped"] = ctx.procs.stop_all()
    results["script_s"] = round(time.monotonic() - t0, 1)
    out = REL_DIR / "results" / (datetime.now().strftime("%Y%m%dT%H%M%S") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    section = figures(results)
    if args.publish and "error" not in results:
        section = merged_with_published(section)
        log(f"published: {update_section('reliability', section)}")
    print(json.dumps(section, indent=2, default=str))
    log(f"results: {out}")
    return exit_code


def merged_with_published(section: dict) -> dict:
    """This run's faults over the published ones (a run of some faults keeps the others,
    each entry with the date and command of the run that produced it)."""
    from results_file import LATEST

    published = {}
    if LATEST.exists():
        published = json.loads(LATEST.read_text()).get("reliability") or {}
    merged = {**published, **section}
    for name in FAULTS:
        if name not in section and name in published:
            merged[name] = published[name]
    if "kill9" not in section and "kill9_rounds" in published:
        merged["kill9_rounds"] = published["kill9_rounds"]
    return merged


def activity_logs_family() -> str:
    """Whether the activity-log family writes anything yet (its faults would run then)."""
    from notes_pipeline.activity_logs.definitions import STATUS_ASSETS

    if STATUS_ASSETS.load.to_user_string() == "crm_audits_raw":  # part 1: probe and plan only
        return "pending: the family has no load asset yet (part 2, issue #13); nothing to inject"
    return "has a load asset: add its job and collection to devtools/faults.py and this script"


def figures(results: dict) -> dict:
    """The machine-readable figures (latest.json `reliability`)."""
    section: dict[str, Any] = {
        "date": results["date"],
        "command": "benchmarks/reliability.py " + " ".join(results["argv"]),
        "mongo": results.get("mongo"),
        "script_s": results.get("script_s"),
        "error": results.get("error"),
        "activity_logs": results.get("activity_logs"),
    }
    kill = results["faults"].get("kill9")
    if kill:
        section["kill9_rounds"] = kill["injected"]
    for name, outcome in results["faults"].items():
        entry = {k: outcome[k] for k in ("injected", "duplicates", "lost", "checks_ok", "seconds")}
        entry["date"] = results["date"]
        entry["command"] = section["command"]
        for extra in ("mid_load_kills", "identical", "counts_honest", "backfill_completed"):
            if extra in outcome:
                entry[extra] = outcome[extra]
        if name == "kill9":
            entry["dead_run_marked_failed_after_s"] = [
                r["dead_run_marked_failed_after_s"] for r in outcome["rounds"]
            ]
            entry["notes_in_cdp_at_kill"] = [r["notes_in_cdp_at_kill"] for r in outcome["rounds"]]
        if name == "s3_outage":
            entry["attachment_repair"] = outcome["attachment_repair"]
            entry["outage_s"] = outcome["outage_s"]
            entry["attachments_failed_by_the_outage"] = outcome["faulted_run"].get(
                "attachments_failed_by_the_outage"
            )
            entry["attachments_failed_by_reason"] = outcome["faulted_run"]["load"].get(
                "attachments_failed_by_reason"
            )
        if name in ("postgres_restart", "mongo_restart"):
            entry["faulted_run_status"] = outcome["faulted_run"]["status"]
            entry["faulted_run_failure"] = outcome["faulted_run"].get("failure")
        section[name] = entry
    return section


if __name__ == "__main__":
    sys.exit(main())
