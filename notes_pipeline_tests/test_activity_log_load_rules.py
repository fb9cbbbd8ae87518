"""The activity-log loader, job rules, report and alerts as plain Python (SPEC-activity-logs
§6-§9): no Dagster run, no services."""

from __future__ import annotations

import csv
import io

import pytest

from notes_pipeline.activity_logs.alerts import activity_log_alerts
from notes_pipeline.activity_logs.jobs import (
    JobAlreadyRunning,
    LoadCounters,
    ResumePoint,
    progress_pct,
    resume_point,
    start_job,
)
from notes_pipeline.activity_logs.load import ActivityLoadContext, load_activity_logs
from notes_pipeline.activity_logs.records import (
    FailureCode,
    JobStatus,
    PlanEntry,
    PlanOutcome,
    SkipCode,
)
from notes_pipeline.activity_logs.summary import PlanTally
from notes_pipeline.activity_logs.validation import (
    Thresholds,
    build_report,
    comparable,
    compare_plan,
    error_csv,
    index_stored,
)
from notes_pipeline.core.crm_records import AuditProbe, Organization
from notes_pipeline.core.resources.in_memory import InMemoryCdpMongo, in_memory_store
from notes_pipeline.core.resources.mongo_writes import BulkUpsertResult
from notes_pipeline.core.run_metadata import ReportSummary
from notes_pipeline.core.vocabulary import LoadStatus, MonitorState

ORG = Organization(cid="9001", name="Org", company_sso_id="co-9001")


def ready(audit_id: int) -> PlanEntry:
    return PlanEntry(
        crm_audit_id=audit_id,
        external_id=f"crm_audit:{audit_id}",
        outcome=PlanOutcome.READY,
        document={
            "company_sso_id": ORG.company_sso_id,
            "external_id": f"crm_audit:{audit_id}",
            "source_tag": "crm_migration",
            "changes": [{"field": "name", "from": "secret-old", "to": "secret-new"}],
            "metadata": {"crm_audit_id": audit_id, "job_id": "j"},
        },
        category="contact",
        action="update",
        actor_case="A1",
    )


def planned(audit_id: int, outcome: PlanOutcome, code) -> PlanEntry:
    return PlanEntry(audit_id, f"crm_audit:{audit_id}", outcome, code, "field=name")


class Server:
    """A writer keyed like the unique index; ``reject`` ids fail ``failures`` times each."""

    def __init__(self, reject: set[int] = frozenset(), failures: int = 10**6, raises=False):
        self.docs: dict[str, dict] = {}
        self.reject = set(reject)
        self.left = {i: failures for i in reject}
        self.raises = raises
        self.calls = 0

    def __call__(self, documents, *, recheck_matched=False):
        self.calls += 1
        result = BulkUpsertResult()
        for index, doc in enumerate(documents):
            audit_id = doc["metadata"]["crm_audit_id"]
            if audit_id in self.reject and self.left[audit_id] > 0:
                self.left[audit_id] -= 1
                if self.raises:
                    raise ConnectionError("down")
                result.errors[index] = "code=2"
            elif doc["external_id"] in self.docs:
                result.matched.add(index)
            else:
                self.docs[doc["external_id"]] = doc
                result.upserted.add(index)
        return result


def load(entries, server, **kwargs):
    ctx = ActivityLoadContext(org=ORG, write=server, job_id="job-1", **kwargs)
    return load_activity_logs(ctx, entries)


def test_every_entry_ends_in_one_outcome_and_the_counts_add_up():
    entries = [
        ready(1),
        planned(2, PlanOutcome.SKIPPED, SkipCode.UNMAPPED_ACTION_TYPE),
        ready(3),
        planned(4, PlanOutcome.FAILED, FailureCode.CONTACT_NOT_FOUND),
        ready(5),
    ]
    server = Server()
    result = load(entries, server, batch_size=2, write_concurrency=2)
    c = result.counters
    assert (c.migrated, c.skipped, c.failed) == (3, 1, 1)
    assert c.processed == len(entries)
    assert result.skipped_by_code == {"unmapped_action_type": 1}
    assert [f.reason_code for f in result.failures] == ["contact_not_found"]
    assert result.last_audit_id == 5 and result.status == LoadStatus.LOADED
    again = load(entries, server, batch_size=2)
    assert again.counters.migrated == 0
    assert again.skipped_by_code["duplicate_external_id"] == 3


def test_failure_rate_exactly_ten_percent_goes_on_one_more_halts():
    entries = [ready(i) for i in range(1, 21)]
    at_limit = load(entries, Server(reject={1, 2}), batch_size=20, write_concurrency=1)
    assert at_limit.status == LoadStatus.LOADED  # 2 / 20 = 0.10: not above
    over = load(entries, Server(reject={1, 2, 3}), batch_size=20, write_concurrency=1)
    assert over.status == LoadStatus.HALTED  # 3 / 20 > 0.10
    assert over.queue_left == 3 and over.queue_retried == 0  # halted: no end-of-run retry


def test_halt_stops_writing_and_counts_the_rest_not_attempted():
    entries = [ready(i) for i in range(1, 101)]
    server = Server(reject=set(range(1, 101, 5)))  # 20 % of every batch
    result = load(entries, server, batch_size=10, write_concurrency=1)
    assert result.status == LoadStatus.HALTED
    assert result.batches == 1
    assert result.not_attempted == 90
    assert result.counters.processed + result.not_attempted == 100
    assert len(server.docs) == 8
    assert result.last_audit_id == 10


def test_plan_failures_early_in_id_order_never_halt_the_write_path():
    entries = [planned(i, PlanOutcome.FAILED, FailureCode.INVALID_TIMESTAMP) for i in (1, 2, 3)]
    entries += [ready(i) for i in range(4, 30)]
    result = load(entries, Server(), batch_size=5, write_concurrency=1)
    assert result.status == LoadStatus.LOADED
    assert result.counters.failed == 3 and result.writes.failed == 0


def test_a_failed_batch_is_retried_once_then_the_end_of_run_queue():
    entries = [ready(i) for i in range(1, 41)]
    once = Server(reject={7}, failures=1)  # fails once: the batch retry recovers it
    result = load(entries, once, batch_size=20, write_concurrency=2)
    assert (result.counters.migrated, result.queued) == (40, 0)
    twice = Server(reject={7}, failures=2)  # batch + its retry fail: the queue recovers it
    result = load(entries, twice, batch_size=20, write_concurrency=2)
    assert (result.queued, result.queue_recovered, result.queue_left) == (1, 1, 0)
    assert result.counters.migrated == 40 and result.counters.failed == 0
    always = Server(reject={7})
    result = load(entries, always, batch_size=20, write_concurrency=2)
    assert (result.queue_left, result.counters.failed) == (1, 1)
    assert [(f.external_id, f.reason_code) for f in result.failures] == [
        ("crm_audit:7", "write_failed")
    ]


def test_a_raising_writer_fails_its_rows_not_the_run():
    entries = [ready(i) for i in range(1, 21)]
    result = load(entries, Server(reject={1}, failures=1, raises=True), batch_size=20)
    assert result.counters.migrated == 20 and not result.failures


def test_resume_skips_what_the_old_job_counted_and_retries_its_retryable_failures():
    entries = [ready(i) for i in range(1, 11)]
    resume = ResumePoint("old", 6, LoadCounters(5, 0, 0), frozenset({"crm_audit:3"}))
    server = Server()
    result = load(entries, server, batch_size=5, write_concurrency=1, resume=resume)
    assert sorted(server.docs) == [
        "crm_audit:10",
        "crm_audit:3",
        *map("crm_audit:{}".format, (7, 8, 9)),
    ]
    assert result.counters.migrated == 5 + 5
    assert result.resumed_from_job_id == "old"


def test_resume_point_only_after_a_halt():
    job = {
        "job_id": "a",
        "status": "halted",
        "last_audit_id": 9,
        "records_migrated": 4,
        "records_skipped": 1,
        "records_failed": 3,
    }
    point = resume_point(job, {"crm_audit:2": None})
    assert point.carried == LoadCounters(4, 1, 2)
    assert point.done(5, "crm_audit:5") and not point.done(2, "crm_audit:2")
    assert not point.done(10, "crm_audit:10")
    assert resume_point({**job, "status": "completed_success"}, {}) is None
    assert resume_point(None, {}) is None


def test_progress_pct():
    assert progress_pct(0, 0) == 100.0
    assert progress_pct(1, 3) == 33.3
    assert progress_pct(5, 4) == 100.0


def test_the_write_rate_ceiling_paces_the_writer():
    clock = [0.0]
    pauses: list[float] = []

    def pause(seconds):
        pauses.append(seconds)
        clock[0] += seconds

    entries = [ready(i) for i in range(1, 41)]
    ctx = ActivityLoadContext(
        org=ORG,
        write=Server(),
        job_id="j",
        batch_size=10,
        write_concurrency=1,
        max_write_rate_per_s=10.0,
        clock=lambda: clock[0],
        pause=pause,
    )
    load_activity_logs(ctx, entries)
    assert clock[0] == pytest.approx(4.0)  # 40 records at 10/s
    assert len(pauses) == 4


PROBE = AuditProbe(100, "2020-01-01 00:00:00", None, None, 10, 1, 10)


def test_one_active_job_per_company_and_stale_takeover():
    store = in_memory_store("load-rules-jobs", reset=True)
    cdp = InMemoryCdpMongo(store="load-rules-jobs")
    start = lambda job_id, alive: start_job(  # noqa: E731
        cdp, ORG, PROBE, job_id, is_in_flight=alive, date_range_start=None, triggered_by="t"
    )
    first, resume = start("run-1", lambda _: True)
    assert first["status"] == "in_progress" and resume is None
    with pytest.raises(JobAlreadyRunning) as refused:
        start("run-2", lambda run_id: run_id == "run-1")
    assert refused.value.job_id == "run-1"
    cdp.update_job("run-1", {"last_audit_id": 4, "records_migrated": 4})
    taken, resume = start("run-3", lambda _: False)  # run-1 is gone: taken over and resumed
    assert store.activity_log_jobs["run-1"]["status"] == "halted"
    assert store.activity_log_jobs["run-1"]["halted_reason"] == "run_not_in_flight"
    assert taken["resumed_from_job_id"] == "run-1" and resume.last_audit_id == 4
    assert store.activity_log_locks[ORG.company_sso_id]["job_id"] == "run-3"


def test_a_resume_re_sends_write_failures_with_the_id_the_halted_job_sent():
    in_memory_store("load-rules-resume-ids", reset=True)
    cdp = InMemoryCdpMongo(store="load-rules-resume-ids")
    start = lambda job_id: start_job(  # noqa: E731
        cdp, ORG, PROBE, job_id, is_in_flight=lambda _: False, date_range_start=None,
        triggered_by="t",
    )  # fmt: skip
    start("run-1")
    cdp.update_job("run-1", {"last_audit_id": 9, "records_failed": 3})
    failure = {"company_sso_id": ORG.company_sso_id, "cid": ORG.cid, "job_id": "run-1"}
    cdp.record_failures(
        [
            {
                **failure,
                "external_id": "crm_audit:2",
                "reason_code": "write_failed",
                "document_id": "sent-2",
            },
            {**failure, "external_id": "crm_audit:3", "reason_code": "write_failed"},
            {**failure, "external_id": "crm_audit:4", "reason_code": "contact_not_found"},
        ]  # fmt: skip
    )
    _, resume = start("run-2")  # run-1 is gone: halted, and run-2 resumes it
    assert resume.retry == {"crm_audit:2", "crm_audit:3"}
    assert resume.attempt_ids == {"crm_audit:2": "sent-2"}
    assert resume.carried.failed == 1  # contact_not_found stays failed


def test_report_states_and_error_csv_carry_no_values():
    entries = [
        ready(1),
        ready(2),
        planned(3, PlanOutcome.SKIPPED, SkipCode.UNMAPPED_ACTION_TYPE),
        planned(4, PlanOutcome.FAILED, FailureCode.CONTACT_NOT_FOUND),
    ]
    server = Server()
    result = load(entries, server, batch_size=20)
    stored = index_stored(
        [
            {**d, "_id": "x", "metadata": {**d["metadata"], "job_id": "other"}}
            for d in server.docs.values()
        ]
    )
    fidelity = compare_plan(entries, stored)
    plan = PlanTally.of(entries)
    assert (plan.in_scope, fidelity.mismatched_count, stored.duplicates) == (3, 0, [])
    report = build_report(ORG.cid, result, plan, fidelity, stored, 2, Thresholds())
    assert report.accuracy_pct == pytest.approx(66.667)
    assert report.status == JobStatus.COMPLETED_WITH_ERRORS
    assert report.contact_not_found_pct == pytest.approx(33.333)
    body, rows = error_csv(result, fidelity)
    parsed = list(csv.reader(io.StringIO(body.decode())))
    assert parsed[0] == ["external_id", "crm_audit_id", "reason_code", "details"]
    assert rows == 2 and b"secret" not in body
    assert {r[2] for r in parsed[1:]} == {"contact_not_found", "unmapped_action_type"}


def test_fidelity_sees_a_changed_document_and_duplicates():
    doc = ready(1).document
    changed = {**doc, "changes": [{"field": "name", "from": "a", "to": "b"}]}
    stored = index_stored([changed, dict(doc)])
    assert stored.duplicates == ["crm_audit:1"]
    assert compare_plan([ready(1)], index_stored([changed])).mismatched == ["crm_audit:1"]
    # FerretDB drops null / [] from $setOnInsert: not a mismatch
    assert comparable({**doc, "user_id": None}) == comparable(doc)


def test_final_state_success_needs_accuracy_contacts_and_an_empty_queue():
    entries = [ready(i) for i in range(1, 101)]
    server = Server()
    result = load(entries, server, batch_size=20)
    stored = index_stored(server.docs.values())
    pieces = (PlanTally.of(entries), compare_plan(entries, stored), stored)
    assert build_report("c", result, *pieces, 100, Thresholds()).status == "completed_success"
    assert build_report("c", result, *pieces, 98, Thresholds()).status == "completed_with_errors"
    skipped = build_report("c", result, *pieces, None, Thresholds())
    assert skipped.validation_skipped and skipped.status == "completed_with_errors"


@pytest.mark.parametrize(
    ("status", "accuracy", "metadata", "expected"),
    [
        ("halted", 50.0, {}, [("pagerduty", "crm_activity_logs_migration_halted", "P1")]),
        ("completed_success", 100.0, {}, []),
        (
            "completed_with_errors",
            98.0,
            {"contact_not_found_pct": 1.0, "actor_unresolved_pct": 20.5},
            [
                ("pagerduty", "crm_activity_logs_migration_accuracy_below_threshold", "P2"),
                ("pagerduty", "crm_activity_logs_migration_contact_not_found_rate", "P2"),
                ("slack", "crm_activity_logs_migration_actor_unresolved_rate", None),
            ],
        ),
        (
            "completed_success",
            99.0,
            {"contact_not_found_pct": 0.9, "actor_unresolved_pct": 20.0},
            [],
        ),
    ],
)
def test_alert_routing(status, accuracy, metadata, expected):
    summary = ReportSummary(MonitorState(status), {}, 1.0, match_pct=accuracy)
    alerts = activity_log_alerts("9001", "job", summary, metadata)
    got = [(str(a.channel), a.code, str(a.priority) if a.priority else None) for a in alerts]
    assert got == expected
