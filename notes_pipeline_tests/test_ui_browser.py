"""What Ops see in the Dagster UI, rendered by headless Chromium and read back through GraphQL.

A module fixture starts its own ``dagster-webserver`` on the stack's PostgreSQL-backed instance
(DAGSTER_HOME from .stack/env). Before any page is opened, two fixture accounts are run through
the four assets with the test harness (in-process, same instance):

* ``OK_CID`` (990301): every note maps to a contact -> all checks pass, report
  ``completed_success``;
* ``GATED_CID`` (990302): 3 of 10 notes belong to a person without a CDP contact -> the blocking
  ``contact_coverage`` check fails (ERROR) and ``cdp_notes_loaded`` is never materialized.

Chromium is the Debian package (/usr/bin/chromium, ``scripts/install_browser.sh``), driven by
Playwright for Python; ``playwright install`` is never used. Screenshots land in
``test-artifacts/ui/``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
from crm_fixtures import PNG, FixtureNote, FixtureOrg, install
from pipeline_harness import cdp_db, run_cid, stack_resources
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from notes_pipeline.contact_notes.assets.overview import migration_overview
from notes_pipeline.contact_notes.reason_codes import NoteCode
from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.vocabulary import MonitorState

pytestmark = [pytest.mark.browser, pytest.mark.stack]

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WEBSERVER_START_TIMEOUT_S = 120.0
UI_TIMEOUT_MS = 30_000

LOCATION = "notes_pipeline.definitions"  # workspace.yaml python_module without location_name
REPOSITORY = "__repository__"
GROUP = "notes_migration"
ASSETS = ("crm_notes_raw", "normalized_notes", "cdp_notes_loaded", "validation_report")
#: (asset, check, severity) of every gate declared in notes_pipeline.contact_notes.checks
CHECKS = (
    ("normalized_notes", "contact_coverage", "ERROR"),
    ("normalized_notes", "normalization_failure_rate", "ERROR"),
    ("cdp_notes_loaded", "load_failure_rate", "ERROR"),
    ("validation_report", "match", "ERROR"),
    ("validation_report", "failure_rate", "ERROR"),
    ("validation_report", "no_duplicates", "ERROR"),
    ("validation_report", "fidelity", "ERROR"),
    ("validation_report", "attachments", "WARN"),
    ("validation_report", "source_drift", "WARN"),
)

OK_CID = "990301"
GATED_CID = "990302"
OK_NOTES = 4
GATED_NOTES, GATED_UNMAPPED = 10, 3


# --------------------------------------------------------------------------- webserver


@dataclass
class Webserver:
    base_url: str
    pid: int

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=60,
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        if not pids:
            return []
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _location_loaded(base_url: str) -> bool:
    """The server answers and the code location is loaded (not loading, not an error)."""
    try:
        info = httpx.get(f"{base_url}/server_info", timeout=5)
        if info.status_code != 200:
            return False
        data = httpx.post(
            f"{base_url}/graphql",
            json={
                "query": "{ workspaceOrError { ... on Workspace { locationEntries {"
                " name loadStatus locationOrLoadError { __typename } } } } }"
            },
            timeout=10,
        ).json()["data"]
    except (httpx.HTTPError, KeyError, ValueError):
        return False
    entries = data["workspaceOrError"]["locationEntries"]
    return any(
        e["name"] == LOCATION
        and e["loadStatus"] == "LOADED"
        and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
        for e in entries
    )


@dataclass
class WebserverProcess:
    proc: subprocess.Popen
    base_url: str
    log_path: Path


@pytest.fixture(scope="module")
def webserver_process(stack_env: dict[str, str]) -> Iterator[WebserverProcess]:
    """Starts `dagster-webserver` (not waiting for it); stops it by PID at module end."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ)
    env["DAGSTER_HOME"] = stack_env["DAGSTER_HOME"]
    env["NOTES_PIPELINE_ENABLED_CIDS"] = "*"
    log_path = ARTIFACTS / "webserver.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster-webserver")),
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield WebserverProcess(proc, f"http://127.0.0.1:{port}", log_path)
    finally:
        children = _children(proc.pid)  # the code server it spawned
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for pid in _wait_gone(children, 30):
            os.kill(pid, signal.SIGTERM)
        assert not _wait_gone(children, 10), f"webserver children still alive: {children}"


@pytest.fixture(scope="module")
def webserver(webserver_process: WebserverProcess, materialized, gated) -> Webserver:
    """The running webserver, once both fixture CIDs are materialized (they run meanwhile)."""
    proc, base_url = webserver_process.proc, webserver_process.base_url
    deadline = time.monotonic() + WEBSERVER_START_TIMEOUT_S
    while not _location_loaded(base_url):
        log_tail = webserver_process.log_path.read_text()[-4000:]
        if proc.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{log_tail}")
        if time.monotonic() > deadline:
            pytest.fail(f"dagster-webserver not ready in {WEBSERVER_START_TIMEOUT_S}s:\n{log_tail}")
        time.sleep(0.25)
    return Webserver(base_url=base_url, pid=proc.pid)


# --------------------------------------------------------------------------- pipeline state


@dataclass(frozen=True)
class Materialized:
    cid: str
    run_id: str
    company_sso_id: str
    note_ids: list[str]
    unmapped_note_ids: list[str]


def _forget_partition_runs(instance: dg.DagsterInstance, cid: str) -> None:
    """Delete earlier (finished) runs of this fixture CID so its history is this session's only.

    Only runs tagged with this test's own partition key are touched.
    """
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": cid}))
    for run in runs:
        if run.is_finished:
            instance.delete_run(run.run_id)


def _materialize(org: FixtureOrg, unmapped_person: int | None = None) -> Materialized:
    db = cdp_db()
    install(org, db)
    db.contact_notes.delete_many({"company_sso_id": org.company_sso_id})
    instance = dg.DagsterInstance.get()
    cid = str(org.cid)
    _forget_partition_runs(instance, cid)
    result = run_cid(
        cid, stack_resources(), instance=instance, raise_on_error=False, force_rerun=True
    )
    return Materialized(
        cid=cid,
        run_id=result.run_id,
        company_sso_id=org.company_sso_id,
        note_ids=[str(n.id) for n in org.notes],
        unmapped_note_ids=[str(n.id) for n in org.notes if n.person_id == unmapped_person],
    )


@pytest.fixture(scope="module")
def materialized() -> Materialized:
    """OK_CID: four person notes (one with an image), all contacts mapped -> completed_success."""
    cid = int(OK_CID)
    notes = [FixtureNote(cid * 1000 + i, person_id=1 + i % 2) for i in range(1, OK_NOTES + 1)]
    notes[0].images = [(cid * 1000 + 901, "photo.png", PNG, "image/png")]
    state = _materialize(FixtureOrg(cid, notes, {1, 2}))
    run = dg.DagsterInstance.get().get_run_by_id(state.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    return state


@pytest.fixture(scope="module")
def gated() -> Materialized:
    """GATED_CID: 3 of 10 in-scope notes have no contact (coverage 70 %) -> gate fails."""
    cid = int(GATED_CID)
    notes = [
        FixtureNote(cid * 1000 + i, person_id=2 if i > GATED_NOTES - GATED_UNMAPPED else 1)
        for i in range(1, GATED_NOTES + 1)
    ]
    state = _materialize(FixtureOrg(cid, notes, {1}), unmapped_person=2)
    assert len(state.unmapped_note_ids) == GATED_UNMAPPED
    return state


# --------------------------------------------------------------------------- GraphQL helpers

METADATA_FIELDS = """
  label
  __typename
  ... on TextMetadataEntry { text }
  ... on MarkdownMetadataEntry { mdStr }
  ... on IntMetadataEntry { intValue }
  ... on FloatMetadataEntry { floatValue }
  ... on BoolMetadataEntry { boolValue }
  ... on JsonMetadataEntry { jsonString }
  ... on UrlMetadataEntry { url }
  ... on PathMetadataEntry { path }
"""

PARTITION_KEYS_QUERY = """
query PartitionKeys($group: AssetGroupSelector!, $repo: RepositorySelector!) {
  assetNodes(group: $group) {
    assetKey { path }
    groupName
    partitionKeys
    partitionDefinition { type name dimensionTypes { dynamicPartitionsDefinitionName } }
  }
  partitionSetsOrError(repositorySelector: $repo, pipelineName: "migrate_cid") {
    __typename
    ... on PartitionSets {
      results { name partitionsOrError { ... on Partitions { results { name } } } }
    }
  }
}
"""

CHECK_EXECUTIONS_QUERY = f"""
query LatestCheck($assetKey: AssetKeyInput!, $check: String!, $partition: String!) {{
  assetCheckExecutions(assetKey: $assetKey, checkName: $check, partition: $partition, limit: 1) {{
    runId
    status
    partition
    evaluation {{
      success
      severity
      partition
      metadataEntries {{ {METADATA_FIELDS} }}
    }}
  }}
}}
"""

MATERIALIZATIONS_QUERY = f"""
query PartitionMaterializations($assetKey: AssetKeyInput!, $partition: String!) {{
  assetOrError(assetKey: $assetKey) {{
    __typename
    ... on Asset {{
      assetMaterializations(partitions: [$partition], limit: 5) {{
        runId
        partition
        metadataEntries {{ {METADATA_FIELDS} }}
      }}
    }}
  }}
}}
"""

RUN_QUERY = """
query RunSteps($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
      tags { key value }
      stepStats { stepKey status }
      assetMaterializations { assetKey { path } partition }
    }
  }
}
"""


def metadata_values(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """GraphQL metadata entries -> {label: python value}."""
    values: dict[str, Any] = {}
    for entry in entries:
        kind = entry["__typename"]
        if kind == "JsonMetadataEntry":
            values[entry["label"]] = json.loads(entry["jsonString"])
        else:
            field = {
                "TextMetadataEntry": "text",
                "MarkdownMetadataEntry": "mdStr",
                "IntMetadataEntry": "intValue",
                "FloatMetadataEntry": "floatValue",
                "BoolMetadataEntry": "boolValue",
                "UrlMetadataEntry": "url",
                "PathMetadataEntry": "path",
            }.get(kind)
            values[entry["label"]] = entry[field] if field else kind
    return values


def latest_check(server: Webserver, asset: str, check: str, partition: str) -> dict[str, Any]:
    executions = server.graphql(
        CHECK_EXECUTIONS_QUERY,
        {"assetKey": {"path": [asset]}, "check": check, "partition": partition},
    )["assetCheckExecutions"]
    assert executions, f"no execution of {asset}:{check} for partition {partition}"
    return executions[0]


def partition_materializations(server: Webserver, asset: str, partition: str) -> list[dict]:
    data = server.graphql(
        MATERIALIZATIONS_QUERY, {"assetKey": {"path": [asset]}, "partition": partition}
    )["assetOrError"]
    if data["__typename"] == "AssetNotFoundError":
        return []
    return data["assetMaterializations"]


def registered_cids() -> list[str]:
    return list(dg.DagsterInstance.get().get_dynamic_partitions(cid_partitions.name))


# --------------------------------------------------------------------------- GraphQL tests


def test_graphql_cid_partitions_of_the_group_and_the_job(webserver, materialized, gated):
    before = registered_cids()
    data = webserver.graphql(
        PARTITION_KEYS_QUERY,
        {
            "group": {
                "groupName": GROUP,
                "repositoryName": REPOSITORY,
                "repositoryLocationName": LOCATION,
            },
            "repo": {"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION},
        },
    )
    after = registered_cids()
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert set(nodes) == set(ASSETS)
    for name, node in nodes.items():
        assert node["groupName"] == GROUP
        assert node["partitionDefinition"]["type"] == "DYNAMIC", name
        assert node["partitionDefinition"]["dimensionTypes"] == [
            {"dynamicPartitionsDefinitionName": "cid"}
        ]
        keys = node["partitionKeys"]
        assert {OK_CID, GATED_CID} <= set(keys), name
        # exactly the instance's registered CIDs (read around the query: others may add some)
        assert keys in (before, after), name

    sets = data["partitionSetsOrError"]
    assert sets["__typename"] == "PartitionSets"
    [partition_set] = sets["results"]
    assert partition_set["name"] == "migrate_cid_partition_set"
    job_keys = [p["name"] for p in partition_set["partitionsOrError"]["results"]]
    assert {OK_CID, GATED_CID} <= set(job_keys)
    assert job_keys in (before, after)


def test_graphql_latest_check_executions_of_the_materialized_cid(webserver, materialized):
    seen: dict[str, dict[str, Any]] = {}
    for asset, check, severity in CHECKS:
        execution = latest_check(webserver, asset, check, materialized.cid)
        assert execution["runId"] == materialized.run_id, check
        assert execution["partition"] == materialized.cid
        assert execution["status"] == "SUCCEEDED", (check, execution)
        evaluation = execution["evaluation"]
        assert evaluation["success"] is True, check
        assert evaluation["severity"] == severity, check
        assert evaluation["partition"] == materialized.cid
        seen[check] = metadata_values(evaluation["metadataEntries"])

    assert seen["contact_coverage"]["coverage_pct"] == 100.0
    assert seen["contact_coverage"]["in_scope_notes"] == OK_NOTES
    assert seen["contact_coverage"]["unmapped_note_ids"] == []
    assert seen["normalization_failure_rate"]["failed"] == 0
    assert seen["load_failure_rate"]["status"] != MonitorState.HALTED
    assert seen["load_failure_rate"]["load_failure_rate_pct"] == 0.0
    assert seen["match"] == {
        "match_pct": 100.0,
        "threshold_pct": 99.0,
        "source_count": OK_NOTES,
        "target_count": OK_NOTES,
        "validation_skipped": False,
    }
    assert seen["failure_rate"]["failure_rate_pct"] == 0.0
    assert seen["no_duplicates"]["duplicates"] == 0
    assert seen["fidelity"]["mismatches"] == 0
    assert (seen["attachments"]["copied"], seen["attachments"]["planned"]) == (1, 1)
    assert (seen["attachments"]["repaired"], seen["attachments"]["unavailable"]) == (0, 0)
    assert seen["source_drift"]["drift"] == 0

    [report] = partition_materializations(webserver, "validation_report", materialized.cid)
    assert report["runId"] == materialized.run_id
    meta = metadata_values(report["metadataEntries"])
    assert meta["status"] == MonitorState.COMPLETED_SUCCESS
    assert meta["summary"].startswith(f"### CID {materialized.cid}: `completed_success`")
    assert "| match_pct | 100.0 |" in meta["summary"]
    assert (meta["mismatched"], meta["drift"], meta["mismatched_ids"], meta["drift_ids"]) == (
        0,
        0,
        [],
        [],
    )
    assert (meta["source_count"], meta["target_count"], meta["match_pct"]) == (
        OK_NOTES,
        OK_NOTES,
        100.0,
    )
    assert meta["error_log"].endswith(f"/{materialized.cid}/{materialized.run_id}/error_log.csv")


def test_graphql_failed_coverage_gate_blocks_the_load(webserver, gated):
    execution = latest_check(webserver, "normalized_notes", "contact_coverage", gated.cid)
    assert execution["runId"] == gated.run_id
    assert execution["status"] == "FAILED"
    evaluation = execution["evaluation"]
    assert evaluation["success"] is False
    assert evaluation["severity"] == "ERROR"
    meta = metadata_values(evaluation["metadataEntries"])
    expected_pct = round(100 * (GATED_NOTES - GATED_UNMAPPED) / GATED_NOTES, 2)
    assert meta["coverage_pct"] == expected_pct
    assert meta["threshold_pct"] == 99.0
    assert meta["in_scope_notes"] == GATED_NOTES
    assert meta["unmapped_notes"] == GATED_UNMAPPED
    assert sorted(meta["unmapped_note_ids"]) == sorted(gated.unmapped_note_ids)
    assert meta["reason_code"] == NoteCode.CONTACT_NOT_MAPPED

    # the load step never ran for this partition; upstream assets did (positive control)
    assert partition_materializations(webserver, "cdp_notes_loaded", gated.cid) == []
    assert partition_materializations(webserver, "validation_report", gated.cid) == []
    [normalized] = partition_materializations(webserver, "normalized_notes", gated.cid)
    assert normalized["runId"] == gated.run_id

    run = webserver.graphql(RUN_QUERY, {"runId": gated.run_id})["runOrError"]
    assert run["__typename"] == "Run"
    assert {"key": "dagster/partition", "value": gated.cid} in run["tags"]
    steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
    # a failed blocking check fails its asset's step after the materialization was stored,
    # and nothing downstream runs
    assert steps["normalized_notes"] == "FAILURE", steps
    assert steps.get("cdp_notes_loaded") in (None, "SKIPPED"), steps
    assert steps.get("validation_report") in (None, "SKIPPED"), steps
    materialized_assets = {m["assetKey"]["path"][-1] for m in run["assetMaterializations"]}
    assert materialized_assets == {"crm_notes_raw", "normalized_notes"}
    assert cdp_db().contact_notes.count_documents({"company_sso_id": gated.company_sso_id}) == 0


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: run `bash scripts/install_browser.sh`")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, webserver: Webserver) -> Iterator[Page]:
    context = browser.new_context(
        base_url=webserver.base_url, viewport={"width": 1600, "height": 1000}
    )
    # The "Join the Dagster community" dialog on localhost; dismissed in this browser only
    # (the UI's own useStateWithStorage key), so nothing is written to the shared instance.
    context.add_init_script("window.localStorage.setItem('communityNux', '1');")
    context.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


def screenshot(page: Page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def metadata_value(table: Locator, label: str) -> Locator:
    """The value cell of `table`'s own row (not a nested table's) labelled exactly `label`."""
    return table.locator(f"xpath=./*/tr[td[1][normalize-space(.)='{label}']]/td[2]")


def partition_pane(page: Page, cid: str, marker: str) -> Locator:
    """The innermost element holding the partition's title and `marker` (the detail pane)."""
    return (
        page.locator("div")
        .filter(has=page.locator(f"[title='{cid}']"))
        .filter(has=page.get_by_text(marker, exact=True))
        .last
    )


def test_ui_asset_graph_of_the_group_shows_the_four_assets(page: Page, materialized):
    page.goto(f"/locations/{LOCATION}/asset-groups/{GROUP}")
    expect(page.get_by_text(GROUP, exact=True).first).to_be_visible()
    expect(page.get_by_text("Asset Group in", exact=False).first).to_be_visible()
    for asset in ASSETS:
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    # one graph node per asset, each with its dynamic-partition count
    expect(page.get_by_text(re.compile(r"^\d+ partitions$"))).to_have_count(len(ASSETS))
    screenshot(page, "asset_graph")


def test_ui_partitions_view_lists_the_registered_cids(page: Page, materialized, gated):
    before = registered_cids()
    page.goto("/assets/crm_notes_raw?view=partitions")
    counter = page.get_by_text(re.compile(r"^\d+ Partitions Selected$"))
    expect(counter).to_be_visible()
    after = registered_cids()
    shown = int(counter.inner_text().split()[0])
    assert shown in (len(before), len(after))
    screenshot(page, "partitions")

    search = page.get_by_placeholder("Filter by name…")
    for cid in [c for c in before if c in after]:
        search.fill(cid)
        expect(page.get_by_text(cid, exact=True).first).to_be_visible()
    search.fill(OK_CID)
    expect(page.get_by_text(OK_CID, exact=True).first).to_be_visible()
    expect(page.get_by_text(GATED_CID, exact=True)).to_have_count(0)
    screenshot(page, "partitions_filtered")


def test_ui_validation_report_of_the_cid_shows_summary_and_status(page: Page, materialized):
    page.goto(f"/assets/validation_report?view=partitions&partition={materialized.cid}")
    summary = page.locator(".dagster-markdown").filter(
        has=page.get_by_role("heading", name=f"CID {materialized.cid}: completed_success")
    )
    expect(summary).to_be_visible()
    for measure, value in (
        ("source (in-scope, recounted)", str(OK_NOTES)),
        ("target (migrated in CDP)", str(OK_NOTES)),
        ("match_pct", "100.0"),
        ("failure_rate", "0.0 %"),
        ("migrated", str(OK_NOTES)),
        ("failed", "0"),
        ("attachments re-linked", "1 / 1 (100.0 %)"),
        ("fidelity mismatches", "0"),
    ):
        expect(metadata_value(summary.locator("table"), measure)).to_have_text(value)
    # the materialization's own metadata table (the summary's table is nested inside it)
    metadata = page.locator("table").filter(has=page.get_by_text("error_log_rows", exact=True))
    expect(metadata_value(metadata, "status")).to_have_text(MonitorState.COMPLETED_SUCCESS)
    expect(metadata_value(metadata, "match_pct")).to_have_text("100")
    expect(metadata_value(metadata, "fidelity_mismatches")).to_have_text("0")
    run_link = page.get_by_role("link", name=materialized.run_id[:8], exact=True)
    expect(run_link).to_have_attribute("href", re.compile(materialized.run_id))
    screenshot(page, f"validation_report_{materialized.cid}")


def open_check_partition(page: Page, asset: str, check: str, cid: str) -> Locator:
    """The check's Partitions tab with `cid` selected; returns the partition detail pane."""
    page.goto(f"/assets/{asset}?view=checks&checkDetail={check}")
    # the check pane's own tab (a button), not the asset's "Partitions" tab (a link)
    page.locator("button[role='tab'][title='Partitions']").click()
    page.get_by_placeholder("Filter by partition…").fill(cid)
    page.get_by_text(cid, exact=True).first.click()
    pane = partition_pane(page, cid, "Latest execution")
    expect(pane.get_by_text("Metadata", exact=True)).to_be_visible()
    return pane


@pytest.mark.parametrize(
    ("asset", "check", "expected"),
    [
        ("normalized_notes", "contact_coverage", {"coverage_pct": "100", "unmapped_notes": "0"}),
        ("validation_report", "match", {"match_pct": "100", "source_count": str(OK_NOTES)}),
        ("validation_report", "fidelity", {"mismatches": "0"}),
    ],
)
def test_ui_checks_of_the_materialized_cid(page: Page, materialized, asset, check, expected):
    pane = open_check_partition(page, asset, check, materialized.cid)
    expect(pane.get_by_text("Passed", exact=True)).to_be_visible()
    expect(pane.get_by_text("Failed", exact=True)).to_have_count(0)
    run_link = pane.get_by_role("link", name=materialized.run_id[:8], exact=True)
    expect(run_link).to_have_attribute("href", re.compile(materialized.run_id))
    for label, value in expected.items():
        expect(metadata_value(pane.locator("table"), label)).to_have_text(value)
    screenshot(page, f"check_{check}_{materialized.cid}")


def test_ui_failed_coverage_gate_of_the_gated_cid(page: Page, gated):
    pane = open_check_partition(page, "normalized_notes", "contact_coverage", gated.cid)
    expect(pane.get_by_text("Failed", exact=True)).to_be_visible()
    expect(pane.get_by_text("Passed", exact=True)).to_have_count(0)
    run_link = pane.get_by_role("link", name=gated.run_id[:8], exact=True)
    expect(run_link).to_have_attribute("href", re.compile(gated.run_id))
    coverage = str(round(100 * (GATED_NOTES - GATED_UNMAPPED) / GATED_NOTES))
    table = pane.locator("table")
    expect(metadata_value(table, "coverage_pct")).to_have_text(coverage)
    expect(metadata_value(table, "unmapped_notes")).to_have_text(str(GATED_UNMAPPED))
    expect(metadata_value(table, "reason_code")).to_have_text(NoteCode.CONTACT_NOT_MAPPED)
    screenshot(page, f"check_contact_coverage_{gated.cid}_failed")

    page.goto(f"/assets/cdp_notes_loaded?view=partitions&partition={gated.cid}")
    pane = partition_pane(page, gated.cid, "Latest materialization")
    expect(
        pane.get_by_text(f"Run {gated.run_id[:8]} failed, and did not materialize this asset.")
    ).to_be_visible()
    expect(pane.get_by_text("No metadata entries", exact=True)).to_be_visible()
    expect(pane.get_by_text("View all historical events (0)", exact=True)).to_be_visible()
    screenshot(page, f"cdp_notes_loaded_{gated.cid}_not_materialized")


# --------------------------------------------------------------------------- all CIDs at a glance

OVERVIEW_QUERY = """
query Overview($assetKey: AssetKeyInput!) {
  assetOrError(assetKey: $assetKey) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 1) {
        runId
        metadataEntries {
          label
          __typename
          ... on TableMetadataEntry { table { records schema { columns { name } } } }
          ... on MarkdownMetadataEntry { mdStr }
          ... on IntMetadataEntry { intValue }
        }
      }
    }
  }
}
"""


@dataclass(frozen=True)
class Overview:
    run_id: str
    cids: list[str]


@pytest.fixture(scope="module")
def overview(materialized, gated) -> Overview:
    """migration_overview materialized (in-process, as Ops would after a backfill) once both
    fixture CIDs ran, with ``EXTRA_CIDS`` more registered (never run) so the table is long;
    ``cids`` are the CIDs registered at that moment."""
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(cid_partitions.name, EXTRA_CIDS)
    cids = registered_cids()
    result = dg.materialize([migration_overview], instance=instance)
    return Overview(run_id=result.run_id, cids=sorted(cids, key=int))


EXTRA_CIDS = [str(990310 + i) for i in range(25)]


def test_graphql_overview_lists_every_registered_cid(webserver, overview, materialized, gated):
    data = webserver.graphql(OVERVIEW_QUERY, {"assetKey": {"path": ["migration_overview"]}})
    [latest] = data["assetOrError"]["assetMaterializations"]
    assert latest["runId"] == overview.run_id
    entries = {e["label"]: e for e in latest["metadataEntries"]}
    assert entries["cids"]["intValue"] == len(overview.cids)
    rows = [json.loads(r) for r in entries["overview"]["table"]["records"]]
    assert [r["cid"] for r in rows] == overview.cids
    by_cid = {r["cid"]: r for r in rows}
    ok = by_cid[materialized.cid]
    assert (ok["status"], ok["notes"], ok["match_pct"], ok["verdict"]) == (
        MonitorState.COMPLETED_SUCCESS,
        f"{OK_NOTES}/{OK_NOTES}",
        100.0,
        "go",
    )
    assert ok["last_run"].startswith(materialized.run_id[:8])
    assert by_cid[gated.cid]["status"] == MonitorState.NOT_STARTED  # blocked before any load
    assert entries["plot"]["mdStr"].startswith("![CIDs by status and match_pct](data:image/png")
    assert all(f"| {cid} |" in entries["summary"]["mdStr"] for cid in overview.cids)


def test_ui_overview_shows_every_cid_and_the_plot(page: Page, overview, materialized):
    page.set_viewport_size({"width": 1600, "height": 1000 + 60 * len(overview.cids)})
    page.goto("/assets/migration_overview?view=events")
    run_link = page.get_by_role("link", name=overview.run_id[:8], exact=True)
    expect(run_link).to_have_attribute("href", re.compile(overview.run_id))
    metadata = page.locator("table").filter(has=page.get_by_text("by_status", exact=True)).first
    table = metadata_value(metadata, "overview").locator("table").last
    expect(table.locator("th").first).to_have_text("cid")
    cells = table.locator("tr td:first-child")
    expect(cells).to_have_count(len(overview.cids))
    assert cells.all_inner_texts() == overview.cids  # every registered CID, in CID order
    ok = table.locator("tr").filter(has=page.get_by_text(materialized.cid, exact=True))
    expect(ok).to_contain_text("completed_success")
    expect(ok).to_contain_text("go")
    screenshot(page, "migration_overview")

    metadata_value(metadata, "plot").get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    image = dialog.locator("img[alt='CIDs by status and match_pct']")
    expect(image).to_be_visible()
    expect(image).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    assert image.evaluate("img => img.complete && img.naturalWidth") > 0  # decoded, not broken
    screenshot(page, "migration_overview_plot")
