"""Operating a cutover without services (issue #11): the alert routing rule, the alert sensor
over an ephemeral instance with a 127.0.0.1 receiver, the re-run rule, the PRD §8 JSON shapes,
Basic auth, the cutover verdict and the overview renderings."""

from __future__ import annotations

import base64
import json
import logging
import os

import dagster as dg
import pytest
from http_receiver import Receiver, alert_environment

from notes_pipeline.contact_notes.alerts import notes_alerts
from notes_pipeline.contact_notes.definitions import notes_alert_sensor
from notes_pipeline.contact_notes.monitor import STATUS_ASSETS, cutover_verdict
from notes_pipeline.core import alerts
from notes_pipeline.core.alerts import (
    Alert,
    AlertChannels,
    Channel,
    Priority,
    alert_channels_from_env,
)
from notes_pipeline.core.overview import (
    COLUMN_NAMES,
    counts_by_status,
    overview_markdown,
    overview_png,
    overview_rows,
    overview_table,
    overview_text,
)
from notes_pipeline.core.run_metadata import ReportSummary
from notes_pipeline.core.status import (
    FORCE_RERUN_TAG,
    CidStatus,
    prd_monitor_json,
    refuses_rerun,
)
from notes_pipeline.core.status_api import MissingCredentials, authorized, credentials_from_env
from notes_pipeline.core.vocabulary import MonitorState, RunCode

S = MonitorState


def report(status=S.COMPLETED_SUCCESS, match=100.0, failure=0.0, attachments=100.0, **kw):
    return ReportSummary(
        status=status,
        outcomes={"migrated": 98, "skipped": 0, "failed": 2, "out_of_scope": 0},
        failure_rate_pct=failure,
        match_pct=match,
        error_log_url="s3://cdp-notes/_migration_reports/1001/run/error_log.csv",
        attachment_success_pct=attachments,
        **kw,
    )


# --------------------------------------------------------------------------- routing rule


def test_a_halt_pages_p1_once_with_job_id_cid_and_failure_rate():
    [page] = notes_alerts("1001", "run-1", report(S.HALTED, match=40.0, failure=6.0))
    assert (page.channel, page.priority, page.code) == (
        Channel.PAGERDUTY,
        Priority.P1,
        "crm_notes_migration_halted",
    )
    assert page.payload() == {
        "cid": "1001",
        "job_id": "run-1",
        "priority": "P1",
        "status": "halted",
        "failure_rate": 6.0,
        "error_log_url": "s3://cdp-notes/_migration_reports/1001/run/error_log.csv",
    }


@pytest.mark.parametrize(
    ("match", "expected"),
    [(98.0, [Priority.P2]), (None, [Priority.P2]), (99.0, []), (100.0, [])],
)
def test_match_below_99_or_skipped_validation_pages_p2(match, expected):
    status = S.COMPLETED_WITH_ERRORS if match != 100.0 else S.COMPLETED_SUCCESS
    sent = notes_alerts("1001", "run-1", report(status, match=match))
    assert [a.priority for a in sent] == expected
    if match is None:
        assert sent[0].payload()["reason_code"] == RunCode.VALIDATION_SKIPPED


@pytest.mark.parametrize(("success", "slack"), [(75.0, True), (80.0, False), (100.0, False)])
def test_attachment_failures_above_20_pct_go_to_slack(success, slack):
    sent = notes_alerts("1001", "run-1", report(attachments=success))
    assert [a.channel for a in sent] == ([Channel.SLACK] if slack else [])
    if slack:
        assert sent[0].payload()["attachment_failure_rate"] == 25.0


def test_alerts_refuse_anything_but_ids_codes_and_rates():
    with pytest.raises(ValueError, match="may not carry"):
        Alert(Channel.SLACK, "x", "1001", "run-1", details={"owner_name": "Ann"})


# --------------------------------------------------------------------------- the sensor


def report_event(instance: dg.DagsterInstance, cid: str, summary: ReportSummary) -> str:
    instance.report_runless_asset_event(
        dg.AssetMaterialization("validation_report", partition=cid, metadata=summary.to_metadata())
    )
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("validation_report")), limit=1
    ).records
    return records[0].run_id


def evaluate(instance, channels: AlertChannels, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"alerts": channels}
    )
    return notes_alert_sensor(context)


@pytest.fixture
def instance() -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("cid", ["1001", "1002", "1003", "1004"])
    return instance


def test_sensor_sends_each_new_report_once_through_env_configured_channels(instance, monkeypatch):
    with Receiver() as receiver:
        for name, value in alert_environment(receiver).items():
            monkeypatch.setenv(name, value)
        channels = alert_channels_from_env(dict(os.environ))
        assert isinstance(channels.pagerduty_routing_key, dg.EnvVar)  # the name, not the value
        report_event(instance, "1004", report(S.HALTED, failure=9.0))  # history: not re-alerted
        first = evaluate(instance, channels, None)
        assert receiver.requests == [] and first.cursor
        halted_run = report_event(instance, "1001", report(S.HALTED, match=40.0, failure=6.0))
        report_event(instance, "1002", report(S.COMPLETED_WITH_ERRORS, match=98.0))
        report_event(instance, "1003", report(attachments=75.0))
        second = evaluate(instance, channels, first.cursor)
        third = evaluate(instance, channels, second.cursor)
    assert third.cursor == second.cursor
    sent = [(r.path, r.json()) for r in receiver.requests]
    pages = [body for path, body in sent if path.startswith("/v2/enqueue")]
    slack = [body for path, body in sent if path == "/api/chat.postMessage"]
    assert [(p["payload"]["severity"], p["payload"]["custom_details"]["cid"]) for p in pages] == [
        ("critical", "1001"),
        ("error", "1002"),
    ]
    p1 = pages[0]
    assert p1["routing_key"] == "routing-key-test"
    assert p1["payload"]["custom_details"] == {
        "cid": "1001",
        "job_id": halted_run,
        "priority": "P1",
        "status": "halted",
        "failure_rate": 6.0,
        "error_log_url": "s3://cdp-notes/_migration_reports/1001/run/error_log.csv",
    }
    assert p1["dedup_key"] == f"crm_notes_migration_halted:1001:{halted_run}"
    assert [m["channel"] for m in slack] == ["#notes-migration"]
    assert "cid=1003" in slack[0]["text"] and "attachment_failure_rate=25.0" in slack[0]["text"]
    assert receiver.requests[-1].headers["authorization"] == "Bearer xoxb-test"


def test_sensor_with_nothing_configured_sends_nothing_and_says_so_once(instance, caplog):
    caplog.set_level(logging.WARNING, logger="notes_pipeline.alerts")
    with Receiver() as receiver:
        channels = alert_channels_from_env({})  # no variable set
        cursor = evaluate(instance, channels, None).cursor
        report_event(instance, "1001", report(S.HALTED, failure=6.0))
        result = evaluate(instance, channels, cursor)
        report_event(instance, "1002", report(S.COMPLETED_WITH_ERRORS, match=98.0))
        result = evaluate(instance, channels, result.cursor)
    assert receiver.requests == []
    said = [r.getMessage() for r in caplog.records if r.name == "notes_pipeline.alerts"]
    assert len(said) == 2  # once per channel, not once per tick or per alert
    assert any(alerts.PAGERDUTY_ROUTING_KEY in m for m in said)
    assert any(alerts.SLACK_TOKEN in m for m in said)
    assert json.loads(result.cursor)["said_off"] == ["pagerduty", "slack"]


def test_a_delivery_error_keeps_the_report_for_the_next_tick(instance):
    channels = AlertChannels(
        pagerduty_routing_key="k", pagerduty_events_url="http://127.0.0.1:9/v2/enqueue"
    )
    cursor = evaluate(instance, channels, None).cursor
    report_event(instance, "1001", report(S.HALTED, failure=6.0))
    retried = evaluate(instance, channels, cursor).cursor  # nothing listens on port 9
    assert json.loads(retried)["after"] == json.loads(cursor)["after"]


# --------------------------------------------------------------------------- re-run rule


@pytest.mark.parametrize(
    ("previous", "tags", "refused"),
    [
        (S.COMPLETED_SUCCESS, {}, True),
        (S.COMPLETED_SUCCESS, {FORCE_RERUN_TAG: "true"}, False),
        (S.COMPLETED_SUCCESS, {FORCE_RERUN_TAG: "TRUE"}, False),
        (S.COMPLETED_SUCCESS, {FORCE_RERUN_TAG: "yes"}, True),
        (S.COMPLETED_WITH_ERRORS, {}, False),
        (S.HALTED, {}, False),
        (S.NOT_STARTED, {}, False),
    ],
)
def test_only_a_completed_success_cid_refuses_a_rerun_without_the_tag(previous, tags, refused):
    assert refuses_rerun(previous, tags) is refused


# --------------------------------------------------------------------------- PRD §8 shapes


def status(state, **kw) -> CidStatus:
    fields = dict(
        cid="1001",
        status=state,
        progress_pct=40.0,
        notes_processed=40,
        notes_total=100,
        failure_rate=0.5,
        match_pct=99.5,
        run_id="abcdef0123456789",
        error_log_url="s3://b/k.csv",
        notes_migrated=99,
        attachment_success_pct=100.0,
        owner_resolution_pct=90.0,
        updated_at="2026-06-03T10:00:00Z",
    )
    fields.update(kw)
    return CidStatus(**fields)


def test_prd_monitor_json_shapes_of_the_five_states():
    assert prd_monitor_json(status(S.NOT_STARTED)) == {"status": "not_started"}
    assert prd_monitor_json(status(S.IN_PROGRESS)) == {
        "status": "in_progress",
        "progress_pct": 40.0,
        "notes_processed": 40,
        "notes_total": 100,
    }
    assert prd_monitor_json(status(S.HALTED)) == {
        "status": "halted",
        "failure_rate": 0.5,
        "error_log_url": "s3://b/k.csv",
    }
    assert prd_monitor_json(status(S.COMPLETED_SUCCESS)) == {
        "status": "completed_success",
        "notes_migrated": 99,
        "validation": {"match_pct": 99.5},
    }
    assert prd_monitor_json(status(S.COMPLETED_WITH_ERRORS, match_pct=None)) == {
        "status": "completed_with_errors",
        "notes_migrated": 99,
        "failure_rate": 0.5,
        "error_log_url": "s3://b/k.csv",
        "validation": {"match_pct": None},
    }
    noted = prd_monitor_json(status(S.COMPLETED_SUCCESS, note=RunCode.ALREADY_MIGRATED))
    assert noted["note"] == "ALREADY_MIGRATED"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_and_required_credentials():
    assert authorized(basic("ops", "s3cret"), "ops", "s3cret")
    assert not authorized(basic("ops", "wrong"), "ops", "s3cret")
    assert not authorized(basic("other", "s3cret"), "ops", "s3cret")
    assert not authorized("Basic !!!", "ops", "s3cret")
    assert not authorized("Bearer s3cret", "ops", "s3cret")
    assert not authorized(None, "ops", "s3cret")
    with pytest.raises(MissingCredentials, match="NOTES_PIPELINE_STATUS_PASSWORD"):
        credentials_from_env({"NOTES_PIPELINE_STATUS_USER": "ops"})


# --------------------------------------------------------------------------- overview


@pytest.mark.parametrize(
    ("state", "changes", "verdict"),
    [
        (S.COMPLETED_SUCCESS, {}, "go"),
        (S.COMPLETED_SUCCESS, {"attachment_success_pct": 75.0}, "review: attachments < 95 %"),
        (S.COMPLETED_WITH_ERRORS, {"match_pct": 98.0}, "no-go: match_pct < 99 %"),
        (S.COMPLETED_WITH_ERRORS, {"match_pct": None}, "no-go: validation skipped"),
        (S.COMPLETED_WITH_ERRORS, {"failure_rate": 2.0}, "no-go: failure rate > 1 %"),
        (S.HALTED, {}, "no-go: halted"),
        (S.IN_PROGRESS, {}, "wait"),
        (S.NOT_STARTED, {}, "not started"),
    ],
)
def test_cutover_verdict(state, changes, verdict):
    assert cutover_verdict(status(state, **changes)) == verdict


def test_overview_renderings_list_every_cid():
    statuses = [
        status(S.COMPLETED_SUCCESS, cid="1001"),
        status(S.HALTED, cid="1002", note=""),
        CidStatus("1003", S.NOT_STARTED, 0.0, 0, 0, None, None),
    ]
    rows = overview_rows(statuses, STATUS_ASSETS)
    assert rows[0] == {
        "cid": "1001",
        "status": "completed_success",
        "notes": "99/100",
        "match_pct": 99.5,
        "failure_rate_pct": 0.5,
        "attachment_pct": 100.0,
        "owner_pct": 90.0,
        "last_run": "abcdef01 2026-06-03 10:00Z",
        "verdict": "go",
        "note": None,
    }
    assert counts_by_status(rows)["halted"] == 1 and sum(counts_by_status(rows).values()) == 3
    text = overview_text(rows).splitlines()
    assert text[0].split() == list(COLUMN_NAMES)
    assert [line.split()[0] for line in text[1:]] == ["1001", "1002", "1003"]
    markdown = overview_markdown(rows, "contact notes migration")
    assert all(f"| {cid} |" in markdown for cid in ("1001", "1002", "1003"))
    table = overview_table(rows)
    assert [c.name for c in table.schema.columns] == list(COLUMN_NAMES)
    assert [r.data["cid"] for r in table.records] == ["1001", "1002", "1003"]
    assert overview_png(rows).startswith(b"\x89PNG\r\n\x1a\n")
