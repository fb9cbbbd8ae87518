"""SPEC rules 1-7 as pure functions: order, outcomes and the planned CDP document."""

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from notes_pipeline.contact_notes.reason_codes import (
    LEGACY_OWNER_FALLBACK_LABEL,
    NoteCode,
    ScopeCode,
)
from notes_pipeline.contact_notes.records import OwnerResolution
from notes_pipeline.contact_notes.rules.fingerprint import SOURCE_FINGERPRINT, source_fingerprint
from notes_pipeline.contact_notes.rules.plan import (
    PlanRules,
    plan_note,
    resolve_owner,
    scope_reason,
)
from notes_pipeline.core.crm_records import CrmAttachment, CrmNote, Organization
from notes_pipeline.core.timestamps import InvalidTimestamp, to_utc
from notes_pipeline.core.vocabulary import AttachmentCode, Outcome, PlanOutcome

WIB = timezone(timedelta(hours=7))
ORG = Organization(cid="77", name="Acme", company_sso_id="company-77")
RULES = PlanRules(frozenset({1, 6}), "https://cdp.test/attachments")
OWNER = OwnerResolution(owner_id="sso-1", legacy_owner_label=None)


def note(**overrides) -> CrmNote:
    fields = dict(
        id=10,
        organization_id=77,
        type="Crm::PersonNote",
        crm_person_id=5,
        crm_company_id=None,
        crm_deal_id=None,
        crm_ticket_id=None,
        crm_note_type_id=1,
        note="<p>Hello <b>there</b></p>",
        creator_id=3,
        creator_name="Budi Santoso",
        creator_email="Budi@Example.test",
        created_at=datetime(2023, 1, 2, 9, 30, 15, 123456, tzinfo=WIB),
        updated_at=datetime(2023, 1, 3, 10, 0, tzinfo=WIB),
    )
    fields.update(overrides)
    return CrmNote(**fields)


def plan(n: CrmNote, contact_id: str | None = "contact-5", owner=OWNER):
    return plan_note(n, org=ORG, contact_id=contact_id, owner=owner, rules=RULES)


def test_ready_note_becomes_the_exact_cdp_document():
    result = plan(note())
    assert result.outcome == PlanOutcome.READY
    fingerprint = result.document[SOURCE_FINGERPRINT]
    assert fingerprint == source_fingerprint(
        note(), datetime(2023, 1, 2, 2, 30, 15, 123000), datetime(2023, 1, 3, 3, 0)
    )
    assert re.fullmatch(r"v1:[0-9a-f]{64}", fingerprint)
    assert result.document == {
        "company_sso_id": "company-77",
        "contact_id": "contact-5",
        "owner_id": "sso-1",
        "note": "<p>Hello <b>there</b></p>",
        "attachments": [],
        "is_deleted": False,
        "legacy_crm_note_id": "10",
        "created_at": datetime(2023, 1, 2, 2, 30, 15, 123000),
        "updated_at": datetime(2023, 1, 3, 3, 0),
        SOURCE_FINGERPRINT: fingerprint,
    }
    assert "legacy_owner_label" not in result.document


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (
            {"crm_person_id": None, "crm_deal_id": 4, "type": "Crm::DealNote"},
            ScopeCode.NOT_PERSON_NOTE,
        ),
        ({"crm_person_id": None, "crm_company_id": 4}, ScopeCode.NOT_PERSON_NOTE),
        ({"crm_note_type_id": 2}, ScopeCode.NOTE_TYPE_EXCLUDED),
        ({"crm_note_type_id": None}, ScopeCode.NOTE_TYPE_EXCLUDED),
    ],
)
def test_out_of_scope_notes_are_not_failures(overrides, reason):
    result = plan(note(**overrides))
    assert (result.outcome, result.reason_code) == (Outcome.OUT_OF_SCOPE, reason)


def test_person_wins_over_other_foreign_keys():
    multi = note(crm_deal_id=9, crm_company_id=8, type="Crm::DealNote")
    assert scope_reason(multi, {1, 6}) is None
    assert plan(multi).outcome == PlanOutcome.READY
    assert multi.fk_shape == "person+company+deal"


def test_note_type_allow_set_comes_from_rules_not_code():
    calls = note(crm_note_type_id=2)
    rules = PlanRules(frozenset({2}), RULES.proxy_base_url)
    result = plan_note(calls, org=ORG, contact_id="c", owner=OWNER, rules=rules)
    assert result.outcome == PlanOutcome.READY


@pytest.mark.parametrize(
    ("overrides", "contact", "reason"),
    [
        ({}, None, NoteCode.CONTACT_NOT_MAPPED),
        ({"note": "<script>alert(1)</script>"}, "c", NoteCode.NOTE_EMPTY),
        ({"note": "x" * 10_001}, "c", NoteCode.NOTE_TOO_LONG),
        ({"created_at": None}, "c", NoteCode.INVALID_TIMESTAMP),
        ({"updated_at": "not a date"}, "c", NoteCode.INVALID_TIMESTAMP),
        ({"created_at": "2023-01-02T03:04:05"}, "c", NoteCode.INVALID_TIMESTAMP),
    ],
)
def test_failures_carry_their_reason_code(overrides, contact, reason):
    result = plan(note(**overrides), contact_id=contact)
    assert (result.outcome, result.reason_code) == (Outcome.FAILED, reason)
    assert result.document is None


def test_first_failing_rule_decides():
    bad_everything = note(note="", created_at=None)
    assert plan(bad_everything, contact_id=None).reason_code == NoteCode.CONTACT_NOT_MAPPED
    assert plan(bad_everything).reason_code == NoteCode.NOTE_EMPTY
    out_of_scope = note(crm_note_type_id=3, note="", created_at=None)
    assert plan(out_of_scope, contact_id=None).outcome == Outcome.OUT_OF_SCOPE


def test_owner_resolved_by_case_insensitive_email():
    owner = resolve_owner(note(), {"budi@example.test": "sso-9"})
    assert owner == OwnerResolution("sso-9", None)


def test_unresolved_owner_keeps_crm_name_as_label_and_is_not_a_failure():
    owner = resolve_owner(note(), {})
    assert owner == OwnerResolution(None, "Budi Santoso")
    result = plan(note(), owner=owner)
    assert result.outcome == PlanOutcome.READY
    assert result.document["owner_id"] is None
    assert result.document["legacy_owner_label"] == "Budi Santoso"
    assert result.owner_resolved is False


def test_unknown_creator_gets_the_generic_label():
    owner = resolve_owner(note(creator_id=None, creator_name=None, creator_email=None), {})
    assert owner == OwnerResolution(None, LEGACY_OWNER_FALLBACK_LABEL)


def test_timestamps_are_utc_and_updated_at_is_not_overwritten():
    result = plan(note(updated_at="2024-05-06T07:08:09.5+09:00"))
    assert result.document["created_at"] == datetime(2023, 1, 2, 2, 30, 15, 123000)
    assert result.document["updated_at"] == datetime(2024, 5, 5, 22, 8, 9, 500000)


def test_to_utc_rejects_offsetless_and_accepts_z():
    assert to_utc("2024-01-01T00:00:00Z", "t") == datetime(2024, 1, 1)
    assert to_utc(datetime(2024, 1, 1, tzinfo=UTC), "t") == datetime(2024, 1, 1)
    with pytest.raises(InvalidTimestamp):
        to_utc(datetime(2024, 1, 1), "t")


def test_attachments_planned_with_company_scoped_keys_and_checkin_flag():
    attachments = (
        CrmAttachment("a1", "image", "http://crm/x.png", "x.png", "image/png", 10),
        CrmAttachment("a2", "audio", "http://crm/1.mp3", "1.mp3", "audio/mpeg", 10),
        CrmAttachment("a3", "audio", "http://crm/2.mp3", "2.mp3", "audio/mpeg", 10),
        CrmAttachment("d4", "document", "http://crm/r.pdf", "r.pdf", "application/pdf", 10),
    )
    result = plan(note(attachments=attachments, has_checkin=True))
    assert [a.cdp_type for a in result.attachments] == ["image", "voice_note", "pdf"]
    assert all(a.target_key.startswith("company-77/10/") for a in result.attachments)
    assert all(
        a.proxy_url.startswith("https://cdp.test/attachments/company-77/10/")
        for a in result.attachments
    )
    assert [d.reason_code for d in result.dropped_attachments] == [
        AttachmentCode.ATTACHMENT_EXTRA_VOICE_NOTE
    ]
    assert result.checkin_dropped is True


def test_planning_is_deterministic():
    assert plan(note()) == plan(note())
