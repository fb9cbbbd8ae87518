"""Source drift vs write-path mismatches (issue #12 item 2) and attachment fidelity, as pure
functions: the source fingerprint, the split by cause, the report and its error log."""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import UTC, datetime, timedelta

import pytest

from notes_pipeline.contact_notes.attachment_entries import placeholder_entry
from notes_pipeline.contact_notes.reason_codes import FidelityCode
from notes_pipeline.contact_notes.records import (
    LoadResult,
    NormalizedNotes,
    NoteOutcome,
    OwnerResolution,
)
from notes_pipeline.contact_notes.rules.fingerprint import (
    SOURCE_FINGERPRINT,
    source_changed,
)
from notes_pipeline.contact_notes.rules.plan import PlanRules, plan_note
from notes_pipeline.contact_notes.validation import (
    ReportInputs,
    build_report,
    split_by_cause,
    summary_markdown,
)
from notes_pipeline.core.crm_records import CrmAttachment, CrmNote, Organization
from notes_pipeline.core.vocabulary import LoadStatus, MonitorState, Outcome

ORG = Organization(cid="8201", name="Org", company_sso_id="company-8201")
RULES = PlanRules(frozenset({1, 6}), "https://cdp.test/attachments")
CREATED = datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC)
UPDATED = datetime(2023, 5, 7, 7, 8, 9, tzinfo=UTC)
OWNER = OwnerResolution(None, "Ann")
IMAGE = CrmAttachment("a1", "image", "https://crm.test/1.png", "1.png", "image/png", 10)


def crm_note(n: int = 1, **changes) -> CrmNote:
    fields = dict(
        id=int(ORG.cid) * 1000 + n,
        organization_id=int(ORG.cid),
        type="Crm::PersonNote",
        crm_person_id=1,
        crm_company_id=None,
        crm_deal_id=None,
        crm_ticket_id=None,
        crm_note_type_id=1,
        note=f"<p>note {n}</p>",
        creator_id=7,
        creator_name="Ann",
        creator_email="ann@example.test",
        created_at=CREATED,
        updated_at=UPDATED,
        attachments=(IMAGE,),
    )
    fields.update(changes)
    return CrmNote(**fields)


def plan(note: CrmNote, owner: OwnerResolution = OWNER):
    return plan_note(note, org=ORG, contact_id="c1", owner=owner, rules=RULES)


def fingerprint(note: CrmNote) -> str:
    return plan(note).document[SOURCE_FINGERPRINT]


def stored(note_plan, attachments=None) -> dict:
    """What the loader stores for a plan whose attachments all copied."""
    doc = dict(note_plan.document)
    doc["attachments"] = (
        [
            {
                "type": a.cdp_type,
                "url": a.proxy_url,
                "file_name": a.file_name,
                "file_size_in_byte": 1,
            }
            for a in note_plan.attachments
        ]
        if attachments is None
        else attachments
    )
    return doc


# --------------------------------------------------------------------------- fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"note": "<p>edited in the CRM</p>"},
        {"updated_at": UPDATED + timedelta(days=1)},
        {"created_at": CREATED - timedelta(days=1)},
        {"creator_id": 8},
        {"creator_email": "bob@example.test"},
        {"creator_name": "Bob"},
        {"crm_person_id": 2},
        {"attachments": ()},
        {"attachments": (dataclasses.replace(IMAGE, file_name="2.png"),)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_fingerprint_changes_with_every_field_the_document_derives_from(change):
    assert fingerprint(crm_note(**change)) != fingerprint(crm_note())


@pytest.mark.parametrize(
    "change",
    [
        {"attachments": (dataclasses.replace(IMAGE, file_url="https://crm.test/1.png?sig=2"),)},
        {"crm_note_type_id": 6},  # another allowed type
        {"has_checkin": True},
        {"created_at": "2023-05-06 14:08:09+07"},  # same instant, text transport
    ],
    ids=lambda c: next(iter(c)),
)
def test_fingerprint_ignores_what_the_document_does_not_derive_from(change):
    assert fingerprint(crm_note(**change)) == fingerprint(crm_note())


def test_source_changed_by_fingerprint_and_without_one_by_updated_at():
    now = plan(crm_note(note="<p>edited</p>")).document
    then = plan(crm_note()).document
    assert source_changed(now, then) and not source_changed(then, then)
    legacy = {k: v for k, v in then.items() if k != SOURCE_FINGERPRINT}  # stored before #12
    later = dict(now, updated_at=then["updated_at"] + timedelta(seconds=1))
    assert source_changed(later, legacy)
    assert not source_changed(dict(now, updated_at=then["updated_at"]), legacy)
    other_version = dict(then, **{SOURCE_FINGERPRINT: "v0:abc"})
    assert not source_changed(dict(now, updated_at=then["updated_at"]), other_version)


# --------------------------------------------------------------------------- split by cause


def test_drift_and_write_path_mismatches_are_told_apart():
    migrated = [plan(crm_note(n)) for n in range(1, 5)]
    docs = [stored(p) for p in migrated]
    # note 2: edited in the CRM after migration (the stored doc is the old version's)
    edited = plan(crm_note(2, note="<p>edited</p>", updated_at=UPDATED + timedelta(hours=1)))
    # note 3: the stored document was corrupted (source unchanged)
    docs[2]["note"] = "<p>corrupted</p>"
    # note 4: an attachment silently missing (no placeholder): a write-path mismatch
    docs[3]["attachments"] = []
    plans = [migrated[0], edited, migrated[2], migrated[3]]
    fidelity = split_by_cause(plans, docs)
    assert fidelity.drift == [{"legacy_crm_note_id": "8201002", "fields": "updated_at,note"}]
    assert fidelity.mismatched == [
        {"legacy_crm_note_id": "8201003", "fields": "note"},
        {"legacy_crm_note_id": "8201004", "fields": "attachments"},
    ]
    assert fidelity.attachments_unavailable == 0


def test_a_placeholder_is_unavailable_not_a_mismatch_and_a_duplicate_is():
    p = plan(crm_note())
    with_placeholder = stored(p, [placeholder_entry(p.attachments[0])])
    fidelity = split_by_cause([p], [with_placeholder])
    assert (fidelity.mismatched, fidelity.drift, fidelity.attachments_unavailable) == ([], [], 1)
    doubled = stored(p)
    doubled["attachments"] = doubled["attachments"] * 2
    assert split_by_cause([p], [doubled]).mismatched == [
        {"legacy_crm_note_id": "8201001", "fields": "attachments"}
    ]


def test_owner_change_in_the_crm_is_drift_identity_change_is_a_mismatch():
    p = plan(crm_note())
    doc = stored(p)
    renamed = plan(crm_note(creator_name="Ann B."), OwnerResolution(None, "Ann B."))
    assert split_by_cause([renamed], [doc]).drift[0]["fields"] == "legacy_owner_label"
    resolved = plan(crm_note(), OwnerResolution("sso-ann", None))  # identity service changed
    fidelity = split_by_cause([resolved], [doc])
    assert (
        fidelity.drift == [] and fidelity.mismatched[0]["fields"] == "owner_id,legacy_owner_label"
    )


# --------------------------------------------------------------------------- the report


def report_for(plans, docs):
    load = LoadResult.from_outcomes(
        ORG.cid,
        ORG.company_sso_id,
        LoadStatus.LOADED,
        [NoteOutcome(p.legacy_crm_note_id, Outcome.SKIPPED) for p in plans],
        attachments_planned=len(plans),
        attachments_copied=len(plans),
        attachments_repaired=1,
    )
    inputs = ReportInputs(len(plans), len(docs), docs, [], "k", 99.0, 1.0, 0.0)
    return build_report(NormalizedNotes(ORG, tuple(plans)), load, inputs)


def test_drift_alone_keeps_completed_success_and_is_logged_with_its_code():
    first = plan(crm_note(1))
    edited = plan(crm_note(1, note="<p>secret edit</p>", updated_at=UPDATED + timedelta(1)))
    report, body = report_for(
        [edited, plan(crm_note(2))], [stored(first), stored(plan(crm_note(2)))]
    )
    assert report.status == MonitorState.COMPLETED_SUCCESS
    assert ([r["legacy_crm_note_id"] for r in report.source_drift], report.fidelity_mismatches) == (
        ["8201001"],
        [],
    )
    assert report.attachments_repaired == 1
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert rows == [
        {
            "legacy_crm_note_id": "8201001",
            "reason_code": FidelityCode.SOURCE_DRIFT,
            "details": "fields=updated_at,note",
        }
    ]
    assert "secret" not in body.decode()
    summary = summary_markdown(report)
    assert "| source drift (CRM changed after migration) | 1 |" in summary
    assert "| fidelity mismatches | 0 |" in summary
    assert "- `8201001`: updated_at,note" in summary and "secret" not in summary


def test_a_write_path_mismatch_makes_completed_with_errors_and_is_logged_apart():
    p = plan(crm_note(1))
    doc = stored(p)
    doc["created_at"] = doc["created_at"] + timedelta(seconds=1)
    report, body = report_for([p], [doc])
    assert report.status == MonitorState.COMPLETED_WITH_ERRORS
    assert (len(report.fidelity_mismatches), report.source_drift) == (1, [])
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(r["reason_code"], r["details"]) for r in rows] == [
        (FidelityCode.FIDELITY_MISMATCH, "fields=created_at")
    ]
