"""Fault injection on the local stack, and the checks every fault ends with (RELIABILITY.md).

Used by ``benchmarks/reliability.py`` (every fault, real daemon) and
``notes_pipeline_tests/test_reliability.py`` (the cheaper faults in the suite). Everything here
acts on 127.0.0.1 only and waits on observable conditions with a bounded deadline:

* ``stack_service``: ``scripts/stack.sh stop|start|restart|pause|resume SERVICE`` of the
  caller's stack (its port offset / directory come from the environment handed in);
* ``kill9``: SIGKILL one process by PID (psutil), and wait until it is gone;
* ``wait_for``: poll a predicate until it holds or a deadline passes (``FaultTimeout``);
* ``check_cid``: after a fault and its re-run, one CID's contact notes in CDP against the
  CRM, the latest validation report and the monitor state: duplicates by
  (company_sso_id, legacy_crm_note_id), notes lost (in the CRM, neither in CDP nor failed or
  out of scope with a reason code), whether the counts add up, and whether the status is right;
* ``notes_fingerprint``: a hash per note of the companies' migrated notes, ``_id`` excluded
  (three backfills from scratch must give the same).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import psycopg2
from bson import json_util

ROOT = Path(__file__).resolve().parent.parent
STACK_SH = ROOT / "scripts" / "stack.sh"
T = TypeVar("T")

#: the reason codes of a failed note (an error-log row with any other code is an attachment
#: or a note not attempted after a halt)
NOTE_FAILURE_CODES = frozenset(
    {
        "CONTACT_NOT_MAPPED",
        "NOTE_TOO_LONG",
        "NOTE_EMPTY",
        "INVALID_TIMESTAMP",
        "BATCH_INSERT_FAILED",
        "NOTE_EXTRACT_ERROR",
        "NOTE_TRANSFORM_ERROR",
    }
)
LOAD_STEP = "cdp_notes_loaded"


class FaultTimeout(AssertionError):
    """An awaited condition did not hold before its deadline."""


# --------------------------------------------------------------------------- waiting
def wait_for(
    predicate: Callable[[], T],
    what: str,
    timeout_s: float,
    interval_s: float = 0.05,
    give_up: Callable[[], object] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; that value. Raises
    ``FaultTimeout`` naming ``what`` after ``timeout_s`` seconds, or as soon as ``give_up()``
    returns something truthy (e.g. the run ended before the awaited point)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if give_up is not None and (reason := give_up()):
            raise FaultTimeout(f"gave up waiting for {what}: {reason}")
        if time.monotonic() > deadline:
            raise FaultTimeout(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


# --------------------------------------------------------------------------- processes
def stack_service(action: str, service: str, environ: Mapping[str, str]) -> float:
    """``scripts/stack.sh ACTION SERVICE`` with ``environ`` (the caller's: port offset and
    stack directory); returns its wall time in seconds. ``start``/``restart`` return once the
    service answers again (stack.sh waits for it)."""
    started = time.monotonic()
    subprocess.run(
        ["bash", str(STACK_SH), action, service],
        cwd=ROOT,
        env=dict(environ),
        check=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def stack_pid(service: str, stack_dir: Path) -> int | None:
    """PID of the stack's ``service`` (``.stack/pids/SERVICE.pid``), None when not running."""
    try:
        pid, started = (stack_dir / "pids" / f"{service}.pid").read_text().split()
    except (OSError, ValueError):
        return None
    try:
        proc = psutil.Process(int(pid))
        # the PID file holds the start time in clock ticks since boot (as stack.sh reads it)
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            if fh.read().rsplit(")", 1)[1].split()[19] != started:
                return None
        return proc.pid if proc.is_running() else None
    except (psutil.Error, OSError, IndexError):
        return None


def kill9(pid: int, timeout_s: float = 30.0) -> bool:
    """SIGKILL ``pid`` and wait until it is gone (or a zombie); False if it was already gone."""
    try:
        proc = psutil.Process(pid)
        proc.kill()
    except psutil.NoSuchProcess:
        return False
    wait_for(lambda: not alive(proc), f"process {pid} to die after SIGKILL", timeout_s)
    return True


def alive(proc: psutil.Process) -> bool:
    """True while ``proc`` runs and is not a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --------------------------------------------------------------------------- dagster
def run_worker_pid(instance, run_id: str) -> int | None:
    """The run worker PID ``PreforkRunLauncher`` recorded on the run, if any."""
    from notes_pipeline.instance.run_launcher import RUN_WORKER_PID_TAG

    run = instance.get_run_by_id(run_id)
    value = run.tags.get(RUN_WORKER_PID_TAG) if run else None
    return int(value) if value and value.isdigit() else None


def step_started(instance, run_id: str, step_key: str = LOAD_STEP) -> bool:
    """True once the run's event log has ``STEP_START`` for ``step_key``."""
    import dagster as dg

    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_START, limit=20
    ).records
    return any(r.event_log_entry.step_key == step_key for r in records)


def finished_run(instance, run_id: str):
    """The run once it is finished (SUCCESS, FAILURE or CANCELED), else None."""
    run = instance.get_run_by_id(run_id)
    return run if run is not None and run.is_finished else None


def run_ended(instance, run_id: str) -> str:
    """'' while the run is not finished, else e.g. ``run abc123 ended FAILURE``."""
    run = finished_run(instance, run_id)
    return f"run {run_id} ended {run.status.value}" if run else ""


def latest_metadata(instance, asset: str, cid: str, run_id: str | None = None) -> dict:
    """Plain metadata values of the newest materialization of ``asset`` for ``cid`` (of
    ``run_id`` when given); {} when there is none."""
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[cid]), limit=50
    ).records
    for record in records:
        if run_id is None or record.run_id == run_id:
            return {
                k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()
            }
    return {}


# --------------------------------------------------------------------------- CRM and CDP
@contextmanager
def crm_notes_locked(admin_dsn: str) -> Iterator[Callable[[], int]]:
    """Hold ``LOCK TABLE crm_notes IN ACCESS EXCLUSIVE MODE`` in the CRM database of
    ``admin_dsn`` (the table's owner) until the block ends: every extraction blocks on its
    first page. Yields a function counting the sessions now waiting for that lock (the
    observable sign that an extraction is under way); the lock goes with the connection (a
    PostgreSQL restart ends it too)."""
    conn = psycopg2.connect(admin_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE crm_notes IN ACCESS EXCLUSIVE MODE")

        def waiting() -> int:
            with closing(psycopg2.connect(admin_dsn)) as probe, probe.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE c.relname = 'crm_notes' AND NOT l.granted"
                )
                return int(cur.fetchone()[0])

        yield waiting
    finally:
        try:
            conn.rollback()
            conn.close()
        except psycopg2.Error:  # the server went away meanwhile (a restart): lock gone
            pass


def crm_company(crm_dsn: str, cid: str) -> str:
    """The CID's company_sso_id in the CRM."""
    with closing(psycopg2.connect(crm_dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT company_sso_id FROM organizations WHERE id = %s", (int(cid),))
        return cur.fetchone()[0]


def crm_notes(crm_dsn: str, cid: str) -> dict[str, tuple[bool, int | None]]:
    """Every CRM note of the CID: legacy id → (is a Person note, crm_note_type_id)."""
    with closing(psycopg2.connect(crm_dsn)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, crm_person_id IS NOT NULL, crm_note_type_id FROM crm_notes "
            "WHERE organization_id = %s",
            (int(cid),),
        )
        return {str(i): (person, kind) for i, person, kind in cur.fetchall()}


def cdp_copies(notes_collection, company_sso_id: str) -> Counter:
    """legacy_crm_note_id → how many migrated notes of the company carry it."""
    cursor = notes_collection.find(
        {"company_sso_id": company_sso_id, "legacy_crm_note_id": {"$exists": True}},
        {"legacy_crm_note_id": 1, "_id": 0},
    )
    return Counter(str(doc["legacy_crm_note_id"]) for doc in cursor)


def notes_fingerprint(notes_collection, companies: Iterable[str]) -> dict[str, str]:
    """``company/legacy id`` → sha256 of the stored note without ``_id`` (canonical JSON)."""
    prints = {}
    cursor = notes_collection.find(
        {"company_sso_id": {"$in": sorted(companies)}, "legacy_crm_note_id": {"$exists": True}}
    )
    for doc in cursor:
        doc.pop("_id", None)
        body = json.dumps(doc, sort_keys=True, default=json_util.default).encode()
        prints[f"{doc['company_sso_id']}/{doc['legacy_crm_note_id']}"] = hashlib.sha256(
            body
        ).hexdigest()
    return prints


def error_log(s3_client, url: str | None) -> list[dict[str, str]]:
    """Rows of the report's error-log CSV (``s3://bucket/key``); [] without one."""
    if not url:
        return []
    bucket, key = url.removeprefix("s3://").split("/", 1)
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return list(csv.DictReader(io.StringIO(body)))


# --------------------------------------------------------------------------- the check
@dataclass
class CidCheck:
    """One CID after a fault and its re-run (contact notes).

    ``duplicates``: extra copies in CDP beyond one per legacy id; ``lost``: CRM notes neither
    in CDP, nor failed with a note reason code in the report's error log, nor out of scope by
    SPEC rule 1 (Person note of an allowed type); ``counts_add_up``: the report's outcomes sum
    to the CRM total, migrated + skipped = the notes in CDP, failed = the error log's failed
    notes, out_of_scope = the rule's count; ``status``: the monitor state (``core.status``).
    """

    cid: str
    crm_total: int
    in_cdp: int
    duplicates: int
    lost: int
    lost_ids: list[str]
    failed_with_code: int
    out_of_scope: int
    outcomes: dict[str, int]
    counts_add_up: bool
    status: str
    expected_status: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No duplicate, nothing lost, the counts add up and the status is as expected."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``lost_ids`` cut to 20)."""
        values = asdict(self)
        values["lost_ids"] = values["lost_ids"][:20]
        values["ok"] = self.ok
        return values


def check_cid(
    instance,
    cid: str,
    *,
    crm_dsn: str,
    notes_collection,
    s3_client,
    expected_status: str = "completed_success",
    allowed_note_type_ids: Iterable[int] = (1, 6),
) -> CidCheck:
    """The checks every fault ends with, for one CID (see ``CidCheck``)."""
    from notes_pipeline.contact_notes.monitor import STATUS_ASSETS
    from notes_pipeline.core.status import cid_status

    allowed = set(allowed_note_type_ids)
    company = crm_company(crm_dsn, cid)
    crm = crm_notes(crm_dsn, cid)
    copies = cdp_copies(notes_collection, company)
    report = latest_metadata(instance, "validation_report", cid)
    outcomes = {k: int(v) for k, v in (report.get("outcomes") or {}).items()}
    rows = error_log(s3_client, report.get("error_log"))
    failed_ids = {r["legacy_crm_note_id"] for r in rows if r["reason_code"] in NOTE_FAILURE_CODES}
    out_of_scope = {i for i, (person, kind) in crm.items() if not person or kind not in allowed}
    lost = sorted(set(crm) - set(copies) - failed_ids - out_of_scope, key=int)
    duplicates = sum(n - 1 for n in copies.values() if n > 1)
    strays = sorted(set(copies) - set(crm))
    problems = []
    if duplicates:
        problems.append(f"{duplicates} duplicate note(s) in CDP")
    if lost:
        problems.append(f"{len(lost)} CRM note(s) lost (first: {lost[:5]})")
    if strays:
        problems.append(f"{len(strays)} note(s) in CDP not in the CRM")
    if not report:
        problems.append("no validation_report")
    added = sum(outcomes.get(k, 0) for k in ("migrated", "skipped", "failed", "out_of_scope"))
    counts_add_up = bool(report) and (
        added + outcomes.get("not_attempted", 0) == len(crm)
        and outcomes.get("migrated", 0) + outcomes.get("skipped", 0) == len(copies)
        and outcomes.get("failed", 0) == len(failed_ids)
        and outcomes.get("out_of_scope", 0) == len(out_of_scope)
    )
    if report and not counts_add_up:
        problems.append(
            f"counts do not add up: report {outcomes}, CRM {len(crm)}, CDP {len(copies)}, "
            f"failed in error log {len(failed_ids)}, out of scope by rule {len(out_of_scope)}"
        )
    status = str(cid_status(instance, cid, STATUS_ASSETS).status)
    if status != expected_status:
        problems.append(f"status {status}, expected {expected_status}")
    return CidCheck(
        cid=cid,
        crm_total=len(crm),
        in_cdp=len(copies),
        duplicates=duplicates,
        lost=len(lost),
        lost_ids=lost,
        failed_with_code=len(failed_ids),
        out_of_scope=len(out_of_scope),
        outcomes=outcomes,
        counts_add_up=counts_add_up,
        status=status,
        expected_status=expected_status,
        problems=problems,
    )


def ready_count(check: CidCheck) -> int:
    """Notes the CID writes to CDP when nothing fails to write (migrated + skipped)."""
    return check.outcomes.get("migrated", 0) + check.outcomes.get("skipped", 0)


def settings_run_config(**overrides: Any) -> dict[str, Any]:
    """Run config for ``migrate_cid`` that changes ``MigrationSettings`` fields per run.

    The three deployment values are restated as environment references, as the Launchpad's
    scaffold shows them: Dagster fills the fields a partial ``settings`` config leaves out
    with the class defaults, not with the deployment's values (``batch_size`` alone would
    turn the CID flag off: FLAG_DISABLED).
    """
    config = {
        "enabled_cids": {"env": "NOTES_PIPELINE_ENABLED_CIDS"},
        "attachment_allowed_hosts": {"env": "NOTES_PIPELINE_ATTACHMENT_ALLOWED_HOSTS"},
        "cdp_proxy_base_url": {"env": "NOTES_PIPELINE_CDP_PROXY_BASE_URL"},
        **overrides,
    }
    return {"resources": {"settings": {"config": config}}}


__all__ = [
    "CidCheck",
    "FaultTimeout",
    "alive",
    "cdp_copies",
    "check_cid",
    "crm_company",
    "crm_notes",
    "error_log",
    "finished_run",
    "kill9",
    "latest_metadata",
    "notes_fingerprint",
    "ready_count",
    "settings_run_config",
    "run_ended",
    "run_worker_pid",
    "stack_pid",
    "stack_service",
    "step_started",
    "wait_for",
]
