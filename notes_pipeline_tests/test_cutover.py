"""Operating a cutover against the local stack (issue #11): PRD §12 alerts from real runs, the
HTTP monitor API over real HTTP, ALREADY_MIGRATED and the all-CIDs table of the CLI.

Three fixture CIDs are run once per module (in-process, the session's own instance):

* ``HALTED`` (990701): 20 notes by a named CRM user, 2 of the first batch of 10 rejected by
  MongoDB → the load halts (20 % > 1 %);
* ``ERRORS`` (990702): 50 notes, one without a CDP contact, gates relaxed → match_pct 98 %,
  ``completed_with_errors``;
* ``SUCCESS`` (990703): 4 notes with one image each, one image missing in the CRM bucket →
  ``completed_success`` with 25 % attachment failures.

Alerts go to a receiver on 127.0.0.1 (``http_receiver``); the monitor API is the real
``notes-migration serve-status`` in a subprocess on a free 127.0.0.1 port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import httpx
import pytest
from crm_fixtures import PNG, FixtureNote, FixtureOrg, install_fresh
from http_receiver import Receiver, alert_environment
from pipeline_harness import (
    BlockingMongo,
    block_writes,
    cdp_db,
    metadata,
    run_cid,
    stack_resources,
)

from notes_pipeline import cli
from notes_pipeline.contact_notes.definitions import STATUS_ASSETS, notes_alert_sensor
from notes_pipeline.core.alerts import alert_channels_from_env
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.status import cid_status
from notes_pipeline.core.vocabulary import MonitorState, RunCode

HALTED, ERRORS, SUCCESS, IN_FLIGHT, NEW = "990701", "990702", "990703", "990704", "990705"
RELAXED = {"coverage_threshold_pct": 0, "failure_threshold_pct": 100}
PII = ("Rahasia Nama", "rahasia@example.test", "Secret deal terms")
USER, PASSWORD = "ops-monitor", "monitor-s3cret"
ROUTE = "/private/notes/migration/status"


@dataclass(frozen=True)
class Ran:
    cid: str
    run_id: str
    company_sso_id: str


@pytest.fixture(scope="module")
def alert_cursor() -> str:
    """The alert sensor's first tick, before any fixture CID runs (it starts at the newest)."""
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.get(), resources={"alerts": alert_channels_from_env({})}
    )
    return notes_alert_sensor(context).cursor


@pytest.fixture(scope="module")
def halted(alert_cursor) -> Ran:
    db = cdp_db()
    org = install_fresh(
        FixtureOrg(
            int(HALTED),
            [
                FixtureNote(int(HALTED) * 1000 + i, person_id=1, creator_id=7, html=PII[2])
                for i in range(1, 21)
            ],
            {1},
            users={7: (PII[0], PII[1])},
        ),
        db,
    )
    blocked = [f"{HALTED}00{i}" for i in (3, 7)]
    block_writes(db, org, [int(b) for b in blocked])
    try:
        mongo = BlockingMongo(
            uri=os.environ["NOTES_PIPELINE_MONGO_URI"], database=db.name, blocked=blocked
        )
        result = run_cid(HALTED, stack_resources(mongo=mongo, batch_size=10))
    finally:
        db.contact_notes.delete_many(
            {"company_sso_id": org.company_sso_id, "blocker_key": {"$exists": True}}
        )
        db.contact_notes.drop_index("test_blocker")
    assert result.output_for_node("validation_report").status == MonitorState.HALTED
    return Ran(HALTED, result.run_id, org.company_sso_id)


@pytest.fixture(scope="module")
def errors(alert_cursor) -> Ran:
    base = int(ERRORS) * 1000
    notes = [FixtureNote(base + i, person_id=2 if i == 50 else 1) for i in range(1, 51)]
    org = install_fresh(FixtureOrg(int(ERRORS), notes, {1}), cdp_db())
    result = run_cid(ERRORS, stack_resources(**RELAXED))
    report = result.output_for_node("validation_report")
    assert (report.status, report.match_pct) == (MonitorState.COMPLETED_WITH_ERRORS, 98.0)
    return Ran(ERRORS, result.run_id, org.company_sso_id)


@pytest.fixture(scope="module")
def success(alert_cursor) -> Ran:
    base = int(SUCCESS) * 1000
    notes = [
        FixtureNote(
            base + i,
            person_id=1,
            images=[(base + i, "p.png", PNG if i != 4 else None, "image/png")],
        )
        for i in range(1, 5)
    ]
    org = install_fresh(FixtureOrg(int(SUCCESS), notes, {1}), cdp_db())
    result = run_cid(SUCCESS, stack_resources())
    report = result.output_for_node("validation_report")
    assert (report.status, report.attachment_success_pct) == (MonitorState.COMPLETED_SUCCESS, 75.0)
    return Ran(SUCCESS, result.run_id, org.company_sso_id)


# --------------------------------------------------------------------------- alerts


def evaluate(channels, cursor: str) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.get(), cursor=cursor, resources={"alerts": channels}
    )
    return notes_alert_sensor(context)


def test_alerts_of_real_runs_reach_pagerduty_and_slack_once_without_pii(
    alert_cursor, halted, errors, success, monkeypatch
):
    with Receiver() as receiver:
        for name, value in alert_environment(receiver).items():
            monkeypatch.setenv(name, value)
        channels = alert_channels_from_env(dict(os.environ))
        after = evaluate(channels, alert_cursor)
        again = evaluate(channels, after.cursor)
    assert again.cursor == after.cursor
    pages = [r.json() for r in receiver.requests if r.path.startswith("/v2/enqueue")]
    slack = [r.json() for r in receiver.requests if r.path == "/api/chat.postMessage"]
    by_cid = {}
    for page in pages:
        by_cid.setdefault(page["payload"]["custom_details"]["cid"], []).append(page)
    [p1] = by_cid[HALTED]  # exactly one page for the halted CID
    details = p1["payload"]["custom_details"]
    assert p1["payload"]["severity"] == "critical" and details["priority"] == "P1"
    assert details["job_id"] == halted.run_id and details["cid"] == HALTED
    assert details["failure_rate"] > 1.0
    [p2] = by_cid[ERRORS]
    assert p2["payload"]["severity"] == "error" and p2["payload"]["custom_details"] == {
        "cid": ERRORS,
        "job_id": errors.run_id,
        "priority": "P2",
        "status": "completed_with_errors",
        "match_pct": 98.0,
        "threshold_pct": 99.0,
        "error_log_url": p2["payload"]["custom_details"]["error_log_url"],
    }
    assert SUCCESS not in by_cid
    [message] = [m for m in slack if f"cid={SUCCESS}" in m["text"]]
    assert message["channel"] == "#notes-migration"
    assert "attachment_failure_rate=25.0" in message["text"] and success.run_id in message["text"]
    everything = b"\n".join(r.body for r in receiver.requests).decode()
    for pii in PII:
        assert pii not in everything


def test_with_nothing_configured_nothing_is_sent(alert_cursor, halted, errors, success):
    with Receiver() as receiver:
        result = evaluate(alert_channels_from_env({}), alert_cursor)
    assert receiver.requests == []
    assert "0 alerts sent, 3 not sent" in result.skip_reason.skip_message


# --------------------------------------------------------------------------- monitor API


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_status(port: int, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "notes_pipeline.cli",
            "serve-status",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    """`notes-migration serve-status` on a free 127.0.0.1 port; stopped by PID at the end."""
    port = free_port()
    proc = serve_status(
        port, NOTES_PIPELINE_STATUS_USER=USER, NOTES_PIPELINE_STATUS_PASSWORD=PASSWORD
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve-status exited {proc.returncode}: {proc.stdout.read()}")
            try:
                httpx.get(f"{base}{ROUTE}", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("serve-status did not answer within 60 s")
                time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def get(base: str, cid: str | None, auth=(USER, PASSWORD)) -> httpx.Response:
    params = {"cid": cid} if cid is not None else {}
    return httpx.get(f"{base}{ROUTE}", params=params, auth=auth, timeout=30)


def test_serve_status_refuses_to_start_without_credentials():
    proc = serve_status(
        free_port(), NOTES_PIPELINE_STATUS_USER="", NOTES_PIPELINE_STATUS_PASSWORD=""
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "NOTES_PIPELINE_STATUS_USER" in out and "NOTES_PIPELINE_STATUS_PASSWORD" in out


def test_api_requires_basic_auth_and_knows_only_registered_cids(api, success):
    for auth in (None, (USER, "wrong"), ("someone", PASSWORD)):
        refused = get(api, SUCCESS, auth=auth)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic ")
        assert refused.json()["error"] == "UNAUTHORIZED" and "match_pct" not in refused.text
    missing = get(api, "no-such-cid")
    assert missing.status_code == 404 and missing.json() == {
        "error": "CID_NOT_FOUND",
        "message": "CID no-such-cid is not a registered partition",
        "details": {},
    }
    assert get(api, None).status_code == 400


def test_api_returns_the_prd_shape_of_each_state(api, halted, errors, success):
    dg.DagsterInstance.get().add_dynamic_partitions("cid", [NEW])
    assert get(api, NEW).json() == {"status": "not_started"}

    body = get(api, HALTED).json()
    assert set(body) == {"status", "failure_rate", "error_log_url"}
    assert body["status"] == "halted" and body["failure_rate"] > 1.0
    assert body["error_log_url"].endswith(f"/{HALTED}/{halted.run_id}/error_log.csv")

    assert get(api, SUCCESS).json() == {
        "status": "completed_success",
        "notes_migrated": 4,
        "validation": {"match_pct": 100.0},
    }
    body = get(api, ERRORS).json()
    assert body == {
        "status": "completed_with_errors",
        "notes_migrated": 49,
        "failure_rate": 2.0,
        "error_log_url": body["error_log_url"],
        "validation": {"match_pct": 98.0},
    }
    assert body["error_log_url"].endswith(f"/{ERRORS}/{errors.run_id}/error_log.csv")

    reached, release = threading.Event(), threading.Event()

    class PausingMongo(CdpMongo):
        def upsert_notes(self, company_sso_id, documents, **kwargs):
            calls = self.__dict__.setdefault("_calls", [])
            calls.append(1)
            if len(calls) == 2:
                reached.set()
                assert release.wait(120)
            return super().upsert_notes(company_sso_id, documents, **kwargs)

    base = int(IN_FLIGHT) * 1000
    install_fresh(
        FixtureOrg(int(IN_FLIGHT), [FixtureNote(base + i, person_id=1) for i in range(1, 31)], {1}),
        cdp_db(),
    )
    mongo = PausingMongo(uri=os.environ["NOTES_PIPELINE_MONGO_URI"], database=cdp_db().name)
    worker = threading.Thread(
        target=run_cid, args=(IN_FLIGHT, stack_resources(mongo=mongo, batch_size=10))
    )
    worker.start()
    try:
        assert reached.wait(120)
        assert get(api, IN_FLIGHT).json() == {
            "status": "in_progress",
            "progress_pct": 33.3,
            "notes_processed": 10,
            "notes_total": 30,
        }
    finally:
        release.set()
        worker.join(120)
    assert get(api, IN_FLIGHT).json()["status"] == "completed_success"


# --------------------------------------------------------------------------- ALREADY_MIGRATED


def test_a_completed_cid_is_already_migrated_unless_forced(api, success):
    db = cdp_db()
    before = sorted(db.contact_notes.find({"company_sso_id": success.company_sso_id}), key=str)
    refused = run_cid(SUCCESS, stack_resources(), raise_on_error=False)
    assert not refused.success
    failure = next(e for e in refused.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "cdp_notes_loaded"
    message = failure.event_specific_data.error.message
    assert f"{RunCode.ALREADY_MIGRATED}: CID {SUCCESS} is completed_success" in message
    assert "notes_pipeline/force_rerun=true" in message
    why = failure.event_specific_data.user_failure_data.metadata
    assert why["reason_code"].value == RunCode.ALREADY_MIGRATED
    assert why["previous_run_id"].value == success.run_id
    written = {e.asset_key.to_user_string() for e in refused.get_asset_materialization_events()}
    assert "cdp_notes_loaded" not in written and "validation_report" not in written
    assert sorted(db.contact_notes.find({"company_sso_id": success.company_sso_id}), key=str) == (
        before
    )
    status = cid_status(dg.DagsterInstance.get(), SUCCESS, STATUS_ASSETS)
    assert (status.status, status.note, status.run_id) == (
        MonitorState.COMPLETED_SUCCESS,
        RunCode.ALREADY_MIGRATED,
        success.run_id,
    )
    assert get(api, SUCCESS).json()["note"] == "ALREADY_MIGRATED"

    forced = run_cid(SUCCESS, stack_resources(), force_rerun=True)
    loaded = metadata(forced, "cdp_notes_loaded")
    assert (loaded["migrated"], loaded["skipped"]) == (0, 4)
    after = cid_status(dg.DagsterInstance.get(), SUCCESS, STATUS_ASSETS)
    assert (after.status, after.note, after.run_id) == (
        MonitorState.COMPLETED_SUCCESS,
        "",
        forced.run_id,
    )


def test_a_batch_over_a_mix_refuses_only_the_completed_cids(halted, errors, success):
    """What a backfill does per CID (one run each): completed ones ALREADY_MIGRATED, the halted
    and completed-with-errors ones run as today."""
    results = {
        cid: run_cid(cid, stack_resources(**RELAXED), raise_on_error=False)
        for cid in (SUCCESS, HALTED, ERRORS)
    }
    assert not results[SUCCESS].success
    assert results[HALTED].success and results[ERRORS].success
    instance = dg.DagsterInstance.get()
    assert cid_status(instance, SUCCESS, STATUS_ASSETS).note == RunCode.ALREADY_MIGRATED
    assert cid_status(instance, HALTED, STATUS_ASSETS).status == MonitorState.COMPLETED_SUCCESS
    resumed = metadata(results[HALTED], "cdp_notes_loaded")
    assert (resumed["migrated"], resumed["skipped"]) == (12, 8)  # the rest, nothing twice
    assert cid_status(instance, ERRORS, STATUS_ASSETS).note == ""


# --------------------------------------------------------------------------- the CLI table


def test_status_all_prints_the_overview_of_every_cid(halted, errors, success, capsys):
    assert cli.main(["status", "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    registered = dg.DagsterInstance.get().get_dynamic_partitions("cid")
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(registered)
    verdicts = {line.split()[0]: line for line in lines[1:]}
    assert "no-go: match_pct < 99 %" in verdicts[ERRORS]
    assert "review: attachments < 95 %" in verdicts[SUCCESS]
