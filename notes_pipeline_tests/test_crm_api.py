"""The CRM notes API read strictly (issue #8): one malformed item or attachment fails alone."""

from __future__ import annotations

import json

import httpx
import pytest

from notes_pipeline.contact_notes.reason_codes import NoteCode
from notes_pipeline.contact_notes.records import OwnerResolution
from notes_pipeline.contact_notes.rules.attachments import MAX_DISPLAY_NAME, display_file_name
from notes_pipeline.contact_notes.rules.plan import (
    MAX_OWNER_LABEL,
    PlanRules,
    plan_note_isolated,
    resolve_owner,
)
from notes_pipeline.core.crm_records import Organization
from notes_pipeline.core.resources.attachment_download import AttachmentError, check_url
from notes_pipeline.core.resources.crm import CrmExtractError, HttpCrmSource
from notes_pipeline.core.vocabulary import AttachmentCode, PlanOutcome

CID = 7
ORG = Organization(cid=str(CID), name="Org", company_sso_id="company-7")
RULES = PlanRules(frozenset({1, 6}), "https://cdp.test/attachments")
NOW = "2024-03-10T02:30:00Z"


def item(note_id, **fields) -> dict:
    base = {
        "id": note_id,
        "organization_id": CID,
        "type": "Crm::PersonNote",
        "crm_person_id": 1,
        "crm_note_type_id": 1,
        "note": "<p>hello</p>",
        "created_at": NOW,
        "updated_at": NOW,
        "creator": {"full_name": "Ann", "email": "ann@example.test"},
    }
    base.update(fields)
    return base


def source(pages: list, total_pages=None) -> HttpCrmSource:
    """An API serving ``pages`` (raw bodies or lists of items) for page 1, 2, ..."""

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        body = pages[page - 1] if page <= len(pages) else []
        if isinstance(body, bytes):
            return httpx.Response(200, content=body)
        meta = {"total_pages": total_pages if total_pages is not None else len(pages)}
        return httpx.Response(200, json={"data": body, "meta": meta})

    crm = HttpCrmSource(base_url="https://crm.test", api_token="t", backoff_s=[])
    return crm.with_transport(httpx.MockTransport(handler))


def notes(pages, **kwargs):
    return [n for page in source(pages, **kwargs).iter_note_pages(str(CID), 100) for n in page]


def plans(pages, **kwargs):
    return {
        str(n.id): plan_note_isolated(n, org=ORG, contact_id="c1", sso_by_email={}, rules=RULES)
        for n in notes(pages, **kwargs)
    }


def outcomes(pages, **kwargs) -> dict[str, tuple[str, str | None]]:
    return {k: (p.outcome, p.reason_code) for k, p in plans(pages, **kwargs).items()}


@pytest.mark.parametrize(
    "bad",
    [
        item(None),  # no id
        item("x"),
        item(3.5),  # a float id would be truncated into another note's id
        item(True),
        "a string item",
        None,
        17,
        ["a", "list"],
    ],
    ids=["null-id", "text-id", "float-id", "bool-id", "string", "null", "number", "list"],
)
def test_an_item_without_a_usable_id_fails_alone(bad):
    result = outcomes([[item(1), bad, item(2)]])
    assert result.pop("1") == result.pop("2") == (PlanOutcome.READY, None)
    [(key, outcome)] = result.items()
    assert key == "unidentified-p1i1"
    assert outcome == (PlanOutcome.FAILED, NoteCode.NOTE_EXTRACT_ERROR)


@pytest.mark.parametrize(
    "fields",
    [
        {"organization_id": 555},  # another tenant's note: never written into this company
        {"crm_person_id": "zed.zebra@pii.example"},  # PII where an id belongs
        {"crm_person_id": 1.5},
        {"crm_note_type_id": [1]},
        {"creator_id": {"id": 1}},
        {"crm_deal_id": "9" * 40},
    ],
)
def test_a_mistyped_field_fails_that_note_with_the_class_only(fields):
    result = plans([[item(1), item(2, **fields)]])
    assert (result["1"].outcome, result["2"].outcome) == (PlanOutcome.READY, PlanOutcome.FAILED)
    assert result["2"].reason_code == NoteCode.NOTE_EXTRACT_ERROR
    assert result["2"].details == "exception=FieldError"  # never the value


def test_numeric_strings_are_ids_and_a_huge_integer_fails_only_its_note():
    body = (
        '{"data": ['
        + json.dumps(item(1, crm_note_type_id="1"))
        + ","
        + json.dumps(item(2))[:-1]
        + ', "crm_company_id": '
        + "9" * 5000
        + "}"
        + '], "meta": {"total_pages": 1}}'
    ).encode()
    result = outcomes([body])
    assert result == {
        "1": (PlanOutcome.READY, None),  # "1" is note type 1, in scope
        "2": (PlanOutcome.FAILED, NoteCode.NOTE_EXTRACT_ERROR),
    }


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"data": null}', b'{"meta": {}}', b"[]", b"[" * 100_000 + b"]" * 100_000],
    ids=["not-json", "null-data", "no-data", "list", "deep-nesting"],
)
def test_an_undecodable_page_is_crm_extract_failed_not_a_raw_exception(body):
    with pytest.raises(CrmExtractError, match="CRM_EXTRACT_FAILED"):
        notes([body])


def test_malformed_creator_falls_back_to_the_label_not_a_failure():
    note = notes([[item(1, creator="Alice"), item(2, creator={"email": 5, "full_name": {}})]])
    for n in note:
        assert resolve_owner(n, {}) == OwnerResolution(None, "[Legacy CRM User]")


def test_one_bad_attachment_is_dropped_and_its_note_still_written():
    images = [
        {"id": 9, "file_url": "https://files.crm.test/a.png", "file_name": "a.png"},
        {"file_name": "no-id.png"},  # no id
        "junk",
    ]
    [plan] = plans([[item(1, images=images, documents={"not": "a list"})]]).values()
    assert plan.outcome == PlanOutcome.READY
    assert [a.asset_id for a in plan.attachments] == ["a9"]
    assert [(d.asset_id, d.reason_code, d.details) for d in plan.dropped_attachments] == [
        ("images[1]", AttachmentCode.ATTACHMENT_COPY_ERROR, "stage=extract exception=FieldError"),
        ("images[2]", AttachmentCode.ATTACHMENT_COPY_ERROR, "stage=extract exception=FieldError"),
        ("documents", AttachmentCode.ATTACHMENT_COPY_ERROR, "stage=extract exception=FieldError"),
    ]


def test_an_api_that_repeats_items_or_ignores_the_page_is_read_once():
    result = notes([[item(1), item(2)], [item(1), item(2)], [item(2), item(3)]], total_pages=50)
    assert [n.id for n in result] == [1, 2, 3]


def test_an_api_that_ignores_paging_stops_when_nothing_new_comes():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"data": [item(1)], "meta": {"total_pages": 10_000}})

    crm = HttpCrmSource(base_url="https://crm.test", api_token="t", backoff_s=[])
    crm.with_transport(httpx.MockTransport(handler))
    assert [n.id for page in crm.iter_note_pages(str(CID), 100) for n in page] == [1]
    assert len(calls) == 4  # page 1, then three pages with nothing new


def test_long_labels_and_file_names_are_bounded():
    huge = "x" * 17_000_000
    n = notes([[item(1, creator={"full_name": huge})]])[0]
    assert resolve_owner(n, {}).legacy_owner_label == "[Legacy CRM User]"
    assert len(resolve_owner(n, {}).legacy_owner_label) <= MAX_OWNER_LABEL
    name = display_file_name("a" * 1000 + ".pdf")
    assert len(name) == MAX_DISPLAY_NAME and name.endswith(".pdf")


@pytest.mark.parametrize("url", [None, "", "   "])
def test_a_missing_file_url_is_a_download_failure_not_ssrf(url):
    with pytest.raises(AttachmentError) as raised:
        check_url(url, frozenset({"files.crm.test"}))
    assert (raised.value.reason_code, raised.value.details) == (
        AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED,
        "reason=no_url",
    )


@pytest.mark.parametrize(
    "address", ["fd20:ce::254", "169.254.42.42", "fd00:42::42", "::ffff:169.254.42.42"]
)
def test_more_cloud_metadata_addresses_are_refused_behind_an_exact_entry(address):
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(AttachmentError) as raised:
        check_url(f"http://{host}/x", frozenset({f"{host}:80"}))
    assert raised.value.reason_code == AttachmentCode.ATTACHMENT_SSRF_BLOCKED


def test_timestamps_from_the_api_reach_the_rule_untouched():
    n = notes([[item(1, created_at=1710037800, updated_at={"$date": 1})]])[0]
    assert (n.created_at, n.updated_at) == (1710037800, {"$date": 1})


def test_a_dns_lookup_that_hangs_is_cut_at_the_download_deadline():
    """getaddrinfo cannot be interrupted: the download stops waiting for it at the deadline."""
    import threading

    from notes_pipeline.core.resources.attachment_download import GuardedDownloader

    release = threading.Event()

    def hanging_resolver(*args):
        release.wait(60)
        return []

    try:
        with GuardedDownloader(
            frozenset({"files.crm.test"}), deadline_s=0.2, resolver=hanging_resolver
        ) as downloader:
            with pytest.raises(AttachmentError) as raised:
                downloader.download("https://files.crm.test/a.png")
    finally:
        release.set()
    assert (raised.value.reason_code, raised.value.details) == (
        AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED,
        "reason=deadline",
    )
