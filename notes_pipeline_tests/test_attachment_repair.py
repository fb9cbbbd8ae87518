"""Attachment placeholders and their repair on a re-run (issue #12 item 1), without services:
the pure entry rules, then ``load_ready_notes`` on the in-memory fakes (no Dagster)."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime

import pytest

from notes_pipeline.contact_notes.attachment_entries import (
    Replacement,
    held_assets,
    note_attachments,
    placeholder_entry,
    placeholder_replacements,
    real_entry,
    unavailable_assets,
)
from notes_pipeline.contact_notes.load import LoadContext, load_ready_notes
from notes_pipeline.contact_notes.reason_codes import RepairCode
from notes_pipeline.contact_notes.records import OwnerResolution, PlannedAttachment
from notes_pipeline.contact_notes.rules.plan import PlanRules, plan_note
from notes_pipeline.core.crm_records import CrmAttachment, CrmNote, Organization
from notes_pipeline.core.resources.in_memory import (
    InMemoryAttachmentStorage,
    InMemoryCdpMongo,
    InMemoryDownloader,
    in_memory_store,
)
from notes_pipeline.core.vocabulary import AttachmentCode, Outcome

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
ORG = Organization(cid="8101", name="Org", company_sso_id="company-8101")
RULES = PlanRules(frozenset({1}), "https://cdp.test/attachments")
CREATED = datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC)


def planned(asset_id: str, name: str = "f.png", cdp_type: str = "image") -> PlannedAttachment:
    key = f"{ORG.company_sso_id}/1/{asset_id}-{name}"
    return PlannedAttachment(
        asset_id, f"https://crm.test/{name}", cdp_type, name, key, f"https://cdp.test/{key}", None
    )


# --------------------------------------------------------------------------- pure rules


def test_placeholder_shape_is_type_name_no_url_and_the_flag():
    assert placeholder_entry(planned("d7", "q.pdf", "pdf")) == {
        "type": "pdf",
        "url": None,
        "file_name": "q.pdf",
        "file_size_in_byte": None,
        "unavailable": True,
        "legacy_crm_asset_id": "d7",
    }


def test_note_attachments_keep_plan_order_with_placeholders_in_place():
    a, b, c = planned("a1"), planned("a2", "g.png"), planned("d3", "h.pdf", "pdf")
    copied = {"a1": real_entry(a, "image", 10), "d3": real_entry(c, "pdf", 30)}
    entries = note_attachments([a, b, c], copied)
    assert [e.get("url") for e in entries] == [a.proxy_url, None, c.proxy_url]
    assert entries[1] == placeholder_entry(b)
    assert held_assets(entries, [a, b, c]) == ("a1", "a2", "d3")
    assert unavailable_assets(entries) == ["a2"]


def test_replacements_only_for_placeholders_copied_this_time():
    a, b, c = planned("a1"), planned("a2", "g.png"), planned("d3", "h.pdf", "pdf")
    stored = [real_entry(a, "image", 10), placeholder_entry(b), placeholder_entry(c)]
    copied = {"a1": real_entry(a, "image", 10), "d3": real_entry(c, "pdf", 30)}
    assert placeholder_replacements(stored, copied) == [
        Replacement(2, "d3", real_entry(c, "pdf", 30))
    ]
    assert placeholder_replacements(stored, {}) == []


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (["a1", "a2"], ("a1", "a2")),
        (["a1"], ("a1",)),  # an attachment silently missing
        (["a1", "a1", "a2"], ("a1", "a1", "a2")),  # duplicated
        (["a2", "a1"], ("a2", "a1")),  # out of plan order
        (["a1", "a2", "x"], ("a1", "a2", None)),  # an entry no plan made
    ],
)
def test_held_assets_tell_every_way_an_array_can_differ(stored, expected):
    a, b = planned("a1"), planned("a2", "g.png")
    entries = {
        "a1": real_entry(a, "image", 1),
        "a2": placeholder_entry(b),
        "x": {"type": "image", "url": "https://elsewhere/x.png", "file_name": "x.png"},
    }
    assert held_assets([entries[k] for k in stored], [a, b]) == expected


# --------------------------------------------------------------------------- the loader


class OutageStorage(InMemoryAttachmentStorage):
    """The CDP bucket while it is down: every upload raises."""

    def put(self, key, data, content_type):
        raise ConnectionError("storage down")


PLACEHOLDER_QUERIES: Counter = Counter()  # store name -> calls


class CountingMongo(InMemoryCdpMongo):
    """Counts the placeholder queries per store."""

    def notes_with_unavailable_attachments(self, company_sso_id):
        PLACEHOLDER_QUERIES[self.store] += 1
        return super().notes_with_unavailable_attachments(company_sso_id)


def crm_note(n: int, attachments: tuple[CrmAttachment, ...]) -> CrmNote:
    return CrmNote(
        id=int(ORG.cid) * 1000 + n,
        organization_id=int(ORG.cid),
        type="Crm::PersonNote",
        crm_person_id=1,
        crm_company_id=None,
        crm_deal_id=None,
        crm_ticket_id=None,
        crm_note_type_id=1,
        note=f"<p>note {n}</p>",
        creator_id=None,
        creator_name=None,
        creator_email=None,
        created_at=CREATED,
        updated_at=CREATED,
        attachments=attachments,
    )


@pytest.fixture
def store(request):
    store = in_memory_store(request.node.name, reset=True)
    for n in range(1, 4):
        store.files[f"https://crm.test/{n}.png"] = (PNG, "image/png")
        store.files[f"https://crm.test/{n}.pdf"] = (PDF, "application/pdf")
    return store


def plans():
    """Three notes: two attachments each (an image, a document); note 3 has none."""
    notes = [
        crm_note(
            n,
            (
                CrmAttachment(f"a{n}", "image", f"https://crm.test/{n}.png", f"{n}.png", None, 1),
                CrmAttachment(
                    f"d{n}", "document", f"https://crm.test/{n}.pdf", f"{n}.pdf", None, 1
                ),
            )
            if n < 3
            else (),
        )
        for n in range(1, 4)
    ]
    owner = OwnerResolution(None, "[Legacy CRM User]")
    return [plan_note(n, org=ORG, contact_id="c1", owner=owner, rules=RULES) for n in notes]


def load(store, name, storage_class=InMemoryAttachmentStorage, mongo_class=CountingMongo, **kw):
    ctx = LoadContext(
        org=ORG,
        mongo=mongo_class(store=name),
        storage=storage_class(store=name),
        downloader=InMemoryDownloader(store),
        batch_size=kw.get("batch_size", 2),
        failure_threshold_pct=1.0,
        attachment_workers=2,
        log=logging.getLogger("test"),
        job_id="job",
    )
    return load_ready_notes(ctx, plans())


def docs(store):
    return {k: dict(v) for k, v in store.contact_notes[ORG.company_sso_id].items()}


def without_attachments(doc):
    return {k: v for k, v in doc.items() if k != "attachments"}


def test_outage_then_rerun_repairs_every_placeholder_once_and_nothing_else(store, request):
    name = request.node.name
    first = load(store, name, OutageStorage)
    assert first.counts == {Outcome.MIGRATED: 3} and first.unwritten == []
    assert (first.attachments_planned, first.attachments_copied) == (4, 0)
    assert {f.reason_code for f in first.attachment_failures} == {
        AttachmentCode.ATTACHMENT_UPLOAD_FAILED
    }
    before = docs(store)
    note1 = before["8101001"]["attachments"]
    assert [a["legacy_crm_asset_id"] for a in note1] == ["a1", "d1"]
    assert all(a["unavailable"] is True and a["url"] is None for a in note1)

    second = load(store, name)
    assert second.counts == {Outcome.SKIPPED: 3} and second.unwritten == []
    assert (second.attachments_copied, second.attachments_repaired) == (4, 4)
    assert second.attachment_failures == []
    after = docs(store)
    for key, doc in after.items():
        assert without_attachments(doc) == without_attachments(before[key])  # untouched
    for n in (1, 2):
        held = after[f"810100{n}"]["attachments"]
        assert [a["url"] for a in held] == [
            f"https://cdp.test/attachments/{ORG.company_sso_id}/810100{n}/a{n}-{n}.png",
            f"https://cdp.test/attachments/{ORG.company_sso_id}/810100{n}/d{n}-{n}.pdf",
        ]
        assert [a["type"] for a in held] == ["image", "pdf"]
        assert not any("unavailable" in a for a in held)
    assert after["8101003"]["attachments"] == []

    third = load(store, name)
    assert (third.attachments_copied, third.attachments_repaired) == (4, 0)
    assert docs(store) == after
    # one placeholder query per load, whatever the number of batches (2 per load here)
    assert PLACEHOLDER_QUERIES[name] == 3


def test_placeholder_that_fails_again_stays_and_is_logged(store, request):
    name = request.node.name
    load(store, name, OutageStorage)
    del store.files["https://crm.test/2.pdf"]  # gone from the CRM meanwhile
    second = load(store, name)
    assert second.attachments_repaired == 3
    assert [
        (f.legacy_crm_note_id, f.asset_id, f.reason_code) for f in second.attachment_failures
    ] == [("8101002", "d2", AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED)]
    held = docs(store)["8101002"]["attachments"]
    assert [a.get("unavailable", False) for a in held] == [False, True]
    assert second.attachments_copied + len(second.attachment_failures) == second.attachments_planned


class MovedMongo(CountingMongo):
    """Someone reordered note 1's stored array after the placeholder query: guards fail."""

    def replace_attachment_placeholders(self, company_sso_id, legacy_crm_note_id, replacements):
        if legacy_crm_note_id == "8101001":
            doc = self._store().contact_notes[company_sso_id][legacy_crm_note_id]
            doc["attachments"] = list(reversed(doc["attachments"]))
        return super().replace_attachment_placeholders(
            company_sso_id, legacy_crm_note_id, replacements
        )


class BrokenMongo(CountingMongo):
    def replace_attachment_placeholders(self, company_sso_id, legacy_crm_note_id, replacements):
        raise TimeoutError("server gone")


@pytest.mark.parametrize(
    ("mongo_class", "details"),
    [(MovedMongo, "matched=0"), (BrokenMongo, "exception=TimeoutError")],
)
def test_a_repair_that_cannot_apply_fails_alone_with_its_code(store, request, mongo_class, details):
    name = request.node.name
    load(store, name, OutageStorage)
    second = load(store, name, mongo_class=mongo_class)
    failed = {(f.legacy_crm_note_id, f.asset_id): f for f in second.attachment_failures}
    expected = {("8101001", "a1"), ("8101001", "d1")}
    if mongo_class is BrokenMongo:
        expected |= {("8101002", "a2"), ("8101002", "d2")}
    assert set(failed) == expected
    assert {f.reason_code for f in failed.values()} == {RepairCode.ATTACHMENT_REPAIR_FAILED}
    assert {f.details for f in failed.values()} == {details}
    assert second.attachments_repaired == 4 - len(expected)
    assert second.attachments_copied + len(second.attachment_failures) == second.attachments_planned
    assert all(
        a.get("unavailable") is True for a in docs(store)["8101001"]["attachments"]
    )  # nothing written to that note
    assert second.counts == {Outcome.SKIPPED: 3} and second.unwritten == []
