"""The report as pure functions (no services): outcome counts, status, fidelity, error log."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import datetime

import pytest

from notes_pipeline.contact_notes.reason_codes import NoteCode, ScopeCode
from notes_pipeline.contact_notes.records import (
    AttachmentFailure,
    LoadResult,
    NormalizedNotes,
    NoteOutcome,
    NotePlan,
)
from notes_pipeline.contact_notes.rules.html import content_hash
from notes_pipeline.contact_notes.validation import (
    ReportInputs,
    build_report,
    decide_status,
    error_log_csv,
    fidelity_mismatches,
)
from notes_pipeline.core.crm_records import Organization
from notes_pipeline.core.rates import exceeds_failure_threshold, failure_rate, pct
from notes_pipeline.core.vocabulary import (
    AttachmentCode,
    LoadStatus,
    MonitorState,
    Outcome,
    PlanOutcome,
)

ORG = Organization(cid="5001", name="Org", company_sso_id="company-5001")
CREATED = datetime(2024, 1, 2, 3, 4, 5, 6000)


def ready(legacy_id: str, note: str = "<p>x</p>", **doc) -> NotePlan:
    document = {
        "company_sso_id": ORG.company_sso_id,
        "contact_id": "c1",
        "owner_id": None,
        "legacy_owner_label": "Ann",
        "note": note,
        "legacy_crm_note_id": legacy_id,
        "created_at": CREATED,
        "updated_at": CREATED,
        **doc,
    }
    return NotePlan(
        legacy_id, PlanOutcome.READY, document=document, content_hash=content_hash(note)
    )


def normalized() -> NormalizedNotes:
    return NormalizedNotes(
        ORG,
        (
            ready("1"),
            ready("2"),
            NotePlan("3", PlanOutcome.FAILED, NoteCode.NOTE_EMPTY, "source_length=7"),
            NotePlan("4", PlanOutcome.OUT_OF_SCOPE, ScopeCode.NOT_PERSON_NOTE),
        ),
    )


def load(*outcomes: NoteOutcome, status=LoadStatus.LOADED) -> LoadResult:
    return LoadResult.from_outcomes(ORG.cid, ORG.company_sso_id, status, outcomes)


def test_rates_in_their_units():
    assert failure_rate(1, 98, 1) == pytest.approx(0.01)
    assert pct(1, 3) == 33.333 and pct(0, 0) == 100.0
    assert not exceeds_failure_threshold(1, 99, 0, 1.0)  # exactly 1 %: not above
    assert exceeds_failure_threshold(2, 98, 0, 1.0)


def test_outcomes_add_up_to_the_source_total():
    result = load(NoteOutcome("1", Outcome.MIGRATED), NoteOutcome("2", Outcome.SKIPPED))
    inputs = ReportInputs(4, 2, [], [], "k", 99.0, 1.0, 0.0)
    report, _ = build_report(normalized(), result, inputs)
    assert report.outcomes == {"migrated": 1, "skipped": 1, "failed": 1, "out_of_scope": 1}
    assert sum(report.outcomes.values()) == 4
    assert report.failure_rate_pct == pytest.approx(33.333)
    assert report.status == MonitorState.COMPLETED_WITH_ERRORS  # 1 of 3 attempted failed


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"halted": True}, MonitorState.HALTED),
        ({"skipped": True}, MonitorState.COMPLETED_WITH_ERRORS),
        ({"match_pct": None}, MonitorState.COMPLETED_WITH_ERRORS),
        ({"match_pct": 98.999}, MonitorState.COMPLETED_WITH_ERRORS),
        ({"duplicates": 1}, MonitorState.COMPLETED_WITH_ERRORS),
        ({"mismatches": 1}, MonitorState.COMPLETED_WITH_ERRORS),
        ({"counts": Counter({Outcome.MIGRATED: 98, Outcome.FAILED: 2})}, "with_errors"),
        ({}, MonitorState.COMPLETED_SUCCESS),
    ],
)
def test_decide_status(kwargs, expected):
    args = dict(
        halted=False,
        skipped=False,
        match_pct=99.0,
        counts=Counter({Outcome.MIGRATED: 99, Outcome.FAILED: 1}),
        duplicates=0,
        mismatches=0,
        match_threshold_pct=99.0,
        failure_threshold_pct=1.0,
    )
    args.update(kwargs)
    expected = MonitorState.COMPLETED_WITH_ERRORS if expected == "with_errors" else expected
    assert decide_status(**args) == expected


def test_fidelity_is_a_keyed_diff_of_fields_and_content():
    plans = normalized().plans
    stored = [
        dict(plans[0].document),  # identical
        dict(plans[1].document, owner_id="someone", note="<p>changed</p>"),
        dict(ready("99").document),  # not planned: ignored
    ]
    assert fidelity_mismatches(plans, stored) == [
        {"legacy_crm_note_id": "2", "fields": "owner_id,note"}
    ]


def test_fidelity_treats_a_dropped_null_as_null():
    """FerretDB drops null fields in $setOnInsert: a missing owner_id equals a planned None."""
    plans = normalized().plans
    stored = [dict(plans[0].document), dict(plans[1].document)]
    del stored[0]["owner_id"]
    assert fidelity_mismatches(plans, stored) == []


def test_error_log_rows_cover_every_failure_with_ids_and_codes_only():
    result = load(
        NoteOutcome("1", Outcome.FAILED, NoteCode.BATCH_INSERT_FAILED, "code=11000"),
        NoteOutcome("2", Outcome.NOT_ATTEMPTED),
        status=LoadStatus.HALTED,
    )
    result.attachment_failures.append(
        AttachmentFailure("1", "a7", "image", AttachmentCode.ATTACHMENT_TOO_LARGE)
    )
    body, rows = error_log_csv(normalized(), result)
    parsed = list(csv.DictReader(io.StringIO(body.decode())))
    assert rows == len(parsed) == 4
    assert [(r["legacy_crm_note_id"], r["reason_code"]) for r in parsed] == [
        ("3", "NOTE_EMPTY"),
        ("1", "BATCH_INSERT_FAILED"),
        ("2", "halted"),
        ("1", "ATTACHMENT_TOO_LARGE"),
    ]
    assert parsed[3]["details"] == "asset=a7 type=image"
