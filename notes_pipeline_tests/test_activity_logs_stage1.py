"""Activity logs, part 1, on the local stack (SPEC-activity-logs §3, §4, §15, §16).

* ``stage1`` seeded into the session's CRM/CDP/identity: both CIDs probed, extracted and
  planned through the real sources (read-only CRM role, MongoDB, the identity service over
  HTTP); every audit ends in exactly one planned outcome, the counts add up to the Stage-0
  COUNT, and each §16 golden case is checked against the plan the generator built it for.
* Hand-built CIDs: 98.9 % contact coverage fails the blocking gate, 99.0 % passes; a poison
  audit fails alone (``transform_error``); rows inserted during extraction wait for a re-run.
* No YAML value, name, email or phone in logs or metadata.
* The dry-run job launched through GraphQL on a real ``dagster-webserver`` shows the probe
  figures and the checks per CID.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import psycopg2
import psycopg2.extras
import pytest
from pipeline_harness import cdp_db
from test_synthetic_audits import assert_matches_expected
from test_ui_browser import (
    CHECK_EXECUTIONS_QUERY,
    MATERIALIZATIONS_QUERY,
    Webserver,
    _location_loaded,
    free_port,
    metadata_values,
)

from devtools.synthetic import build_dataset
from devtools.synthetic.audits import (
    CONFIGURED_ID_SETS,
    DATE_RANGE_START,
    RECORD_CASES,
    STAGE1_AUDITS,
)
from devtools.synthetic.writer import Targets, seed
from notes_pipeline.activity_logs.definitions import plan_assets
from notes_pipeline.activity_logs.rules import plan as plan_module
from notes_pipeline.activity_logs.settings import ActivityLogSettings
from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.resources.crm import PostgresCrmSource
from notes_pipeline.core.resources.identity import HttpIdentityDirectory
from notes_pipeline.core.resources.mongo import CdpMongo

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCATION = "notes_pipeline.definitions"
JOB = "dry_run_activity_logs"
GATE_BLOCKED, GATE_PASSES, POISONED = 990611, 990612, 990613
CHECKS = {
    "crm_audits_raw": ("extraction_complete",),
    "normalized_activity_logs": (
        "contact_coverage",
        "planned_failure_rate",
        "unmapped_share",
        "actor_unresolved_share",
    ),
}
WEBSERVER_START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 120

#: emails the identity service was asked for (hop 2), across every run of this module
IDENTITY_CALLS: list[str] = []


class CountingIdentity(HttpIdentityDirectory):
    """The production client, recording each email it actually sends."""

    def _lookup(self, company_sso_id: str, emails: list[str]) -> dict[str, str]:
        IDENTITY_CALLS.extend(emails)
        return super()._lookup(company_sso_id, emails)


def resources(crm_audits: PostgresCrmSource | None = None, **settings) -> dict[str, object]:
    """The activity-log assets' resources on the stack (the CRM through its read-only role)."""
    return {
        "crm_audits": crm_audits or PostgresCrmSource(dsn=os.environ["NOTES_PIPELINE_CRM_DSN"]),
        "cdp_mongo": CdpMongo(
            uri=os.environ["NOTES_PIPELINE_MONGO_URI"],
            database=os.environ["NOTES_PIPELINE_MONGO_DB"],
        ),
        "identity": CountingIdentity(
            root_url=os.environ["NOTES_PIPELINE_IDENTITY_URL"],
            auth_token=os.environ.get("NOTES_PIPELINE_IDENTITY_TOKEN") or None,
        ),
        "activity_log_settings": ActivityLogSettings(**settings),
    }


def dry_run(
    cid: int, *, date_range_start: str | None = None, crm_audits=None, **settings
) -> dg.ExecuteInProcessResult:
    """The two assets and their checks for ``cid`` on the session's instance."""
    instance = dg.DagsterInstance.get()
    if str(cid) not in instance.get_dynamic_partitions(cid_partitions.name):
        instance.add_dynamic_partitions(cid_partitions.name, [str(cid)])
    config = {"date_range_start": date_range_start} if date_range_start else {}
    return dg.materialize(
        plan_assets,
        partition_key=str(cid),
        resources=resources(crm_audits, **settings),
        instance=instance,
        run_config={"ops": {"crm_audits_raw": {"config": config}}},
        raise_on_error=False,
    )


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    events = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in events[-1].metadata.items()} if events else {}


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


# --------------------------------------------------------------------------- the webserver


@dataclass
class DryRunServer:
    proc: subprocess.Popen
    home: Path
    log_path: Path
    base_url: str


@pytest.fixture(scope="module", autouse=True)
def dry_run_server(tmp_path_factory) -> Iterator[DryRunServer]:
    """``dagster-webserver`` on a throw-away instance (SQLite, runs launched at once: no
    daemon needed), started first so it loads while the other tests run."""
    home = tmp_path_factory.mktemp("dagster_home_dry_run")
    (home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster.core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
        "run_launcher:\n  module: dagster.core.launcher\n  class: DefaultRunLauncher\n"
        "telemetry:\n  enabled: false\n"
    )
    port = free_port()
    log_path = home / "webserver.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster-webserver")),
                *("-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)),
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "DAGSTER_HOME": str(home)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield DryRunServer(proc, home, log_path, f"http://127.0.0.1:{port}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# --------------------------------------------------------------------------- stage1


@pytest.fixture(scope="module")
def stage1():
    """``stage1`` in the session's CRM, identity and CDP (no attachment upload needed)."""
    dataset = build_dataset("stage1")
    seed(dataset, Targets.from_env(), attachments=False)
    return dataset


@pytest.fixture(scope="module")
def stage1_runs(stage1, caplog_module) -> dict[int, dg.ExecuteInProcessResult]:
    """Both CIDs planned: 1001 with the default (empty) id-sets, 1002 with them configured."""
    IDENTITY_CALLS.clear()
    runs = {1001: dry_run(1001), 1002: dry_run(1002, **CONFIGURED_ID_SETS)}
    return runs


@pytest.fixture(scope="module")
def caplog_module() -> Iterator[list[str]]:
    """Every log line the activity-log code writes while the module runs (per-record events
    and everything else under ``notes_pipeline``)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("notes_pipeline")
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(previous)


def _expected_ids(dataset, cid: int) -> set[int]:
    return {
        a["id"]
        for a in dataset.audits
        if dataset.audit_cids[a["id"]] == cid
        and dataset.audit_expected[a["id"]]["outcome"] != "not_extracted"
    }


@pytest.mark.parametrize("cid", sorted(STAGE1_AUDITS))
def test_every_stage1_audit_ends_in_exactly_one_planned_outcome(stage1, stage1_runs, cid):
    result = stage1_runs[cid]
    assert result.success
    probe = metadata(result, "crm_audits_raw")
    summary = stage1.summary()["per_cid"][str(cid)]["audits"]
    assert probe["count"] == probe["extracted"] == summary["in_scope"] == STAGE1_AUDITS[cid]
    assert probe["unattributable"] == summary["unattributable_in_window"] == 3
    assert probe["null_created_at"] == summary["null_created_at"]
    assert probe["pages"] == -(-STAGE1_AUDITS[cid] // 500)
    assert probe["high_water_id"] >= max(a["id"] for a in stage1.audits)
    assert probe["cutoff"] == probe["min_created_at"]
    assert probe["explain"]["uses_index"] and probe["explain"]["node_types"]
    plan = result.output_for_node("normalized_activity_logs")
    ids = [e.crm_audit_id for e in plan.iter_entries()]
    assert len(ids) == len(set(ids)) == probe["count"]
    assert set(ids) == _expected_ids(stage1, cid)
    meta = metadata(result, "normalized_activity_logs")
    assert meta["ready"] + meta["skipped"] + meta["failed"] == probe["count"]
    assert meta["outcomes"] == {
        "ready": summary["ready"],
        "skipped": summary["skipped"],
        "failed": summary["failed"],
    }
    assert meta["by_reason_code"] == dict(sorted(summary["by_code"].items()))
    for entry in plan.iter_entries():
        assert_matches_expected(stage1, entry, configured=cid == 1002)
    assert all(e.passed for e in checks(result).values()), {
        n: e.metadata for n, e in checks(result).items() if not e.passed
    }


def test_stage1_metadata_counts_and_lookups(stage1, stage1_runs):
    meta = metadata(stage1_runs[1002], "normalized_activity_logs")
    assert meta["unknown_yaml_tags"] == {"!ruby/object:Money": 2}
    assert meta["by_contact_path"]["crm_contact_id_map"] >= 1
    assert meta["by_contact_path"]["not_found"] == 2
    assert set(meta["by_actor_case"]) == {"A1", "A2", "A3", "A4"}
    assert meta["by_category_action"]["deal/won"] == 1  # id-sets configured for 1002
    assert meta["duplicate_contact_audits"] == 2
    assert (
        metadata(stage1_runs[1001], "normalized_activity_logs")["by_category_action"].get(
            "deal/won"
        )
        is None
    )  # empty id-sets: the stage change stays deal/update
    # hop 1 and 2 batched: one identity call per distinct email, whatever the audit count
    assert len(IDENTITY_CALLS) == len(set(IDENTITY_CALLS))
    asked = sum(
        metadata(r, "normalized_activity_logs")["identity_emails"] for r in stage1_runs.values()
    )
    assert len(IDENTITY_CALLS) == asked
    assert meta["lookup_batches"] == -(
        -STAGE1_AUDITS[1002] // ActivityLogSettings().lookup_batch_size
    )


@pytest.mark.parametrize("case", RECORD_CASES)
def test_golden_case_plans_as_built(stage1, stage1_runs, case):
    """Each §16 record-level case: its audits, through the DB and MongoDB, plan as built."""
    tagged = {i for i, tags in stage1.audit_tags.items() if case in tags}
    assert tagged, case
    entries = {
        e.crm_audit_id: (cid, e)
        for cid, result in stage1_runs.items()
        for e in result.output_for_node("normalized_activity_logs").iter_entries()
    }
    for audit_id in tagged:
        expected = stage1.audit_expected[audit_id]
        if expected["outcome"] == "not_extracted":
            assert audit_id not in entries, case
            continue
        cid, entry = entries[audit_id]
        assert_matches_expected(stage1, entry, configured=cid == 1002)


def test_preloaded_and_batched_contact_lookups_plan_alike(stage1, stage1_runs):
    """§4.3 [N8]: the per-run preload of the company's contacts gives the batched $in's
    matches, duplicates ([N8]: smallest _id) and map fallbacks included."""

    def outcomes(result) -> list[tuple]:
        return [
            (
                replace(e, document=None),
                e.document and e.document["customer_id"],
            )
            for e in result.output_for_node("normalized_activity_logs").iter_entries()
        ]

    preloaded = outcomes(stage1_runs[1002])
    batched_run = dry_run(1002, contact_preload_max=0, **CONFIGURED_ID_SETS)
    assert metadata(stage1_runs[1002], "normalized_activity_logs")["contact_lookups"] == {
        "source_id": "preloaded",
        "crm_contact_id_map": "preloaded",
    }
    assert metadata(batched_run, "normalized_activity_logs")["contact_lookups"] == {
        "source_id": "batched",
        "crm_contact_id_map": "batched",
    }
    assert outcomes(batched_run) == preloaded
    assert sum(1 for entry, _ in preloaded if entry.contact_match_count > 1) == 2


def test_date_range_start_moves_the_cutoff(stage1):
    result = dry_run(1001, date_range_start=DATE_RANGE_START.date().isoformat())
    assert result.success
    probe = metadata(result, "crm_audits_raw")
    since = stage1.summary()["per_cid"]["1001"]["audits"]["since_date_range_start"]
    assert probe["cutoff"] == "2022-01-01 00:00:00" and probe["date_range_start"] == "2022-01-01"
    assert probe["count"] == probe["extracted"] == since
    plan = result.output_for_node("normalized_activity_logs")
    planned = {e.crm_audit_id for e in plan.iter_entries()}
    edges = {
        next(t for t in tags if t.endswith("date_range_start")): i
        for i, tags in stage1.audit_tags.items()
        if any(t.endswith("date_range_start") for t in tags)
    }
    assert edges["extraction:before_date_range_start"] not in planned
    assert edges["extraction:at_date_range_start"] in planned
    assert edges["extraction:after_date_range_start"] in planned


def test_no_yaml_value_name_or_email_in_logs_or_metadata(stage1, stage1_runs, caplog_module):
    instance = dg.DagsterInstance.get()
    texts = list(caplog_module)
    for result in stage1_runs.values():
        for record in instance.all_logs(result.run_id):
            texts.append(record.user_message or "")
            if record.dagster_event is not None:
                texts.append(repr(record.dagster_event.event_specific_data))
    blob = "\n".join(texts)
    assert "crm_activity_logs_migration_record_failed" in blob  # the scan sees the events
    assert "invalid_audited_changes" in blob
    pii = set(stage1.pii)
    pii |= {u["full_name"] for u in stage1.users} | {u["email"] for u in stage1.users if u["email"]}
    pii |= {p["email"] for p in stage1.crm_people if p["email"]}
    pii |= {p["phone"] for p in stage1.crm_people if p["phone"]}
    pii |= {p["full_name"] for p in stage1.crm_people}
    leaked = sorted(value for value in pii if len(value) > 5 and value in blob)
    assert not leaked, leaked[:5]


# --------------------------------------------------------------------------- hand-built CIDs


def audit_base(cid: int) -> int:
    """The first audit id of a hand-built CID (ids stay below 2**31, GraphQL's Int)."""
    return 400_000_000 + (cid % 1000) * 10_000


def install_audit_org(cid: int, audits: int, without_person: int) -> str:
    """One CRM account with 10 persons (each with a CDP contact), a deal and ``audits`` person
    updates, ``without_person`` of them deal updates naming no person (contact_not_found)."""
    company = f"company-al-{cid}"
    base = cid * 1000
    persons = [base + n for n in range(1, 11)]
    deal = base + 500
    rows = []
    for n in range(audits):
        audit_id = audit_base(cid) + n + 1
        stamp = "2023-01-01 00:00:00+00:00"
        if n < without_person:
            rows.append(
                (audit_id, deal, "Crm::Deal", None, None, "update", "---\nname:\n- a\n- b\n", stamp)
            )
        else:
            pid = persons[n % len(persons)]
            rows.append(
                (
                    audit_id,
                    pid,
                    "Crm::Person",
                    None,
                    None,
                    "update",
                    "---\nscore:\n- 1\n- 2\n",
                    stamp,
                )
            )
    with psycopg2.connect(os.environ["NOTES_PIPELINE_CRM_ADMIN_DSN"]) as conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM audits WHERE id BETWEEN %s AND %s",
            (audit_base(cid), audit_base(cid) + 9_999),
        )
        for table in ("crm_people", "crm_deals", "users"):
            cur.execute(f"DELETE FROM {table} WHERE organization_id = %s", (cid,))
        cur.execute("DELETE FROM organizations WHERE id = %s", (cid,))
        cur.execute("INSERT INTO organizations VALUES (%s, %s, %s)", (cid, f"Org {cid}", company))
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO crm_people (id, organization_id, full_name) VALUES %s",
            [(p, cid, f"Person {p}") for p in persons],
        )
        cur.execute("INSERT INTO crm_deals VALUES (%s, %s, 'Deal')", (deal, cid))
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO audits (id, auditable_id, auditable_type, associated_id, associated_type,"
            " action, audited_changes, created_at) VALUES %s",
            rows,
        )
    db = cdp_db()
    db.contacts.delete_many({"company_sso_id": company})
    db.contacts.insert_many(
        [{"_id": f"contact-{p}", "company_sso_id": company, "source_id": str(p)} for p in persons]
    )
    return company


@pytest.fixture(scope="module")
def gate_cids(stage1) -> dict[int, str]:
    """98.9 % (989 of 1,000) and 99.0 % (99 of 100) contact coverage."""
    return {
        GATE_BLOCKED: install_audit_org(GATE_BLOCKED, 1000, 11),
        GATE_PASSES: install_audit_org(GATE_PASSES, 100, 1),
    }


def test_coverage_gate_blocks_at_98_9_and_passes_at_99_0(gate_cids):
    blocked, passes = dry_run(GATE_BLOCKED), dry_run(GATE_PASSES)
    low, high = checks(blocked)["contact_coverage"], checks(passes)["contact_coverage"]
    assert (low.passed, low.severity, low.blocking) == (False, dg.AssetCheckSeverity.ERROR, True)
    assert low.metadata["coverage_pct"].value == 98.9
    assert low.metadata["contact_not_found"].value == 11
    assert not blocked.success  # the failed blocking check fails the step
    assert high.passed and high.metadata["coverage_pct"].value == 99.0
    assert passes.success and all(e.passed for e in checks(passes).values())


def test_a_poison_audit_fails_alone_with_its_code(gate_cids, monkeypatch):
    install_audit_org(POISONED, 200, 0)
    poison = audit_base(POISONED) + 7
    real = plan_module.build_document

    def build_document(audit, **kwargs):
        if audit.id == poison:
            raise RuntimeError("poison")
        return real(audit, **kwargs)

    monkeypatch.setattr(plan_module, "build_document", build_document)
    result = dry_run(POISONED)
    assert result.success
    entries = list(result.output_for_node("normalized_activity_logs").iter_entries())
    failed = [e for e in entries if str(e.outcome) != "ready"]
    assert [(e.crm_audit_id, str(e.code), e.details) for e in failed] == [
        (poison, "transform_error", "stage=complete exception=RuntimeError")
    ]
    assert len(entries) == 200


class InsertingSource(PostgresCrmSource):
    """Inserts a new audit of the CID after the first page (a write during extraction)."""

    def iter_audit_pages(self, scope, page_size=500, **kwargs):
        for number, page in enumerate(super().iter_audit_pages(scope, page_size, **kwargs)):
            yield page
            if number == 0:
                new_id = scope.high_water_id + 1_000
                with psycopg2.connect(os.environ["NOTES_PIPELINE_CRM_ADMIN_DSN"]) as conn:
                    with conn.cursor() as cur:
                        cur.execute(
                            "INSERT INTO audits (id, auditable_id, auditable_type, action,"
                            " audited_changes, created_at) VALUES (%s, %s, 'Crm::Person',"
                            " 'update', '--- {}', '2024-01-01')",
                            (new_id, POISONED * 1000 + 1),
                        )


def test_rows_inserted_during_extraction_wait_for_a_rerun(gate_cids):
    install_audit_org(POISONED, 200, 0)
    source = InsertingSource(dsn=os.environ["NOTES_PIPELINE_CRM_DSN"])
    first = dry_run(POISONED, crm_audits=source, page_size=50)
    probe = metadata(first, "crm_audits_raw")
    assert first.success and probe["count"] == probe["extracted"] == 200 and probe["pages"] == 4
    again = metadata(dry_run(POISONED), "crm_audits_raw")
    assert again["high_water_id"] > probe["high_water_id"]
    assert again["count"] == again["extracted"] == 201


def test_register_cids_adds_accounts_with_notes_or_in_scope_audits(gate_cids, monkeypatch, capsys):
    """``notes-migration register-cids`` (as the sensor): audit-only accounts count too."""
    from notes_pipeline import cli

    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setattr(cli.dg.DagsterInstance, "get", staticmethod(lambda: instance))
    monkeypatch.setenv("NOTES_PIPELINE_CRM_AUDIT_DSN", os.environ["NOTES_PIPELINE_CRM_DSN"])
    assert cli.main(["register-cids"]) == 0
    added = set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["added"])
    assert {"1001", "1002", str(GATE_BLOCKED), str(GATE_PASSES)} <= added  # 9906xx: audits only
    assert set(instance.get_dynamic_partitions(cid_partitions.name)) == added


# --------------------------------------------------------------------------- GraphQL

ADD_PARTITION = """
mutation Add($repo: RepositorySelector!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: "cid", partitionKey: $key) {
    __typename
    ... on PythonError { message }
  }
}
"""
LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
  }
}
"""
RUN_STATUS = "query ($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"


def _wait_until_loaded(server: DryRunServer) -> Webserver:
    deadline = time.monotonic() + WEBSERVER_START_TIMEOUT_S
    while not _location_loaded(server.base_url):
        tail = server.log_path.read_text()[-3000:]
        assert server.proc.poll() is None, tail
        assert time.monotonic() < deadline, tail
        time.sleep(0.25)
    return Webserver(base_url=server.base_url, pid=server.proc.pid)


def _launch(web: Webserver, cid: int) -> str:
    repo = {"repositoryName": "__repository__", "repositoryLocationName": LOCATION}
    added = web.graphql(ADD_PARTITION, {"repo": repo, "key": str(cid)})["addDynamicPartition"]
    assert added["__typename"] in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError")
    launched = web.graphql(
        LAUNCH,
        {
            "executionParams": {
                "selector": {**repo, "jobName": JOB},
                "runConfigData": {},
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": str(cid)}]},
            }
        },
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def _finished(web: Webserver, run_id: str) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        status = web.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.5)


def test_dry_run_job_through_graphql_shows_probe_and_checks_per_cid(dry_run_server, gate_cids):
    web = _wait_until_loaded(dry_run_server)
    runs = {cid: _launch(web, cid) for cid in (GATE_BLOCKED, GATE_PASSES)}
    statuses = {cid: _finished(web, run_id) for cid, run_id in runs.items()}
    assert statuses == {GATE_BLOCKED: "FAILURE", GATE_PASSES: "SUCCESS"}, (
        dry_run_server.log_path.read_text()[-3000:]
    )
    for cid, total in ((GATE_BLOCKED, 1000), (GATE_PASSES, 100)):
        data = web.graphql(
            MATERIALIZATIONS_QUERY,
            {"assetKey": {"path": ["crm_audits_raw"]}, "partition": str(cid)},
        )["assetOrError"]
        [probe_event] = data["assetMaterializations"]
        assert probe_event["runId"] == runs[cid]
        probe = metadata_values(probe_event["metadataEntries"])
        assert (probe["count"], probe["extracted"], probe["cid"]) == (total, total, str(cid))
        assert probe["min_created_at"] == probe["max_created_at"] == "2023-01-01 00:00:00"
        assert probe["high_water_id"] >= audit_base(cid) + total
        assert isinstance(probe["unattributable"], int) and probe["explain"]["node_types"]
        seen = {}
        for asset, names in CHECKS.items():
            for name in names:
                executions = web.graphql(
                    CHECK_EXECUTIONS_QUERY,
                    {"assetKey": {"path": [asset]}, "check": name, "partition": str(cid)},
                )["assetCheckExecutions"]
                [execution] = executions
                assert execution["runId"] == runs[cid]
                seen[name] = (
                    execution["evaluation"]["success"],
                    execution["evaluation"]["severity"],
                    metadata_values(execution["evaluation"]["metadataEntries"]),
                )
        coverage = seen["contact_coverage"]
        assert coverage[1] == "ERROR"
        assert coverage[0] is (cid == GATE_PASSES)
        assert coverage[2]["coverage_pct"] == (98.9 if cid == GATE_BLOCKED else 99.0)
        assert seen["extraction_complete"][0] and seen["planned_failure_rate"][0]
        assert seen["unmapped_share"][1] == seen["actor_unresolved_share"][1] == "WARN"
    # a dry run writes nothing to CDP: no activity log and no job of these CIDs' companies
    companies = {f"company-al-{cid}" for cid in runs}
    for name in ("activity_logs", "crm_activity_log_migration_jobs"):
        assert not cdp_db()[name].find_one({"company_sso_id": {"$in": sorted(companies)}})
