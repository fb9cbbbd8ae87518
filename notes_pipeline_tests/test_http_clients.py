"""The CRM notes API extractor and the identity service client, over httpx MockTransport."""

import httpx
import pytest

from notes_pipeline.core.resources.crm import CrmExtractError, HttpCrmSource
from notes_pipeline.core.resources.identity import HttpIdentityDirectory, IdentityLookupError
from notes_pipeline.core.vocabulary import RunCode

NOTE = {
    "id": 11,
    "organization_id": 5,
    "type": "Crm::PersonNote",
    "crm_person_id": 7,
    "crm_note_type_id": 1,
    "note": "<b>hi</b>",
    "creator_id": 3,
    "creator": {"full_name": "Ani", "email": "ani@x.test"},
    "created_at": "2023-01-01T10:00:00+07:00",
    "updated_at": "2023-01-02T10:00:00+07:00",
    "images": [
        {
            "id": 1,
            "file_url": "http://crm/a.png",
            "file_name": "a.png",
            "content_type": "image/png",
            "file_size": 3,
        }
    ],
    "audios": [],
    "documents": [{"id": 2, "file_url": "http://crm/d.pdf", "file_name": "d.pdf"}],
    "checkin": {"latitude": 1.0},
}


def crm(handler, backoff=(0.0, 0.0, 0.0)) -> tuple[HttpCrmSource, list[float]]:
    waits: list[float] = []
    source = HttpCrmSource(
        base_url="https://crm.test", api_token="Token abc", backoff_s=list(backoff)
    )
    source.with_transport(httpx.MockTransport(handler))
    source._sleep = waits.append
    return source, waits


def test_pages_through_notes_with_auth_header_and_maps_them():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        page = int(request.url.params["page"])
        return httpx.Response(
            200,
            json={
                "data": [dict(NOTE, id=10 + page)] if page <= 2 else [],
                "meta": {"total_pages": 2},
            },
        )

    source, _ = crm(handler)
    pages = list(source.iter_note_pages("5", 100))
    assert [[n.id for n in p] for p in pages] == [[11], [12]]
    assert all(r.headers["Authorization"] == "Token abc" for r in seen)
    assert [dict(r.url.params) for r in seen] == [
        {"organization_id": "5", "page": "1", "per_page": "100"},
        {"organization_id": "5", "page": "2", "per_page": "100"},
    ]
    note = pages[0][0]
    assert [a.asset_id for a in note.attachments] == ["a1", "d2"]
    assert note.has_checkin and note.creator_email == "ani@x.test"


@pytest.mark.parametrize("failure", [500, 503, 423, 429, "timeout"])
def test_recovers_from_two_failures(failure):
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) <= 2:
            if failure == "timeout":
                raise httpx.ReadTimeout("slow", request=request)
            return httpx.Response(failure)
        return httpx.Response(200, json={"data": [NOTE], "meta": {"total_pages": 1}})

    source, waits = crm(handler, backoff=(1.0, 3.0, 9.0))
    assert [n.id for p in source.iter_note_pages("5", 10) for n in p] == [11]
    assert waits == [1.0, 3.0]  # the configured 1 s / 3 s / 9 s schedule, not slept in tests


def test_fails_with_crm_extract_failed_after_the_retry_budget():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(502)

    source, waits = crm(handler, backoff=(1.0, 3.0, 9.0))
    with pytest.raises(CrmExtractError) as error:
        list(source.iter_note_pages("5", 10))
    assert error.value.reason_code == RunCode.CRM_EXTRACT_FAILED
    assert RunCode.CRM_EXTRACT_FAILED in str(error.value)
    assert len(calls) == 4 and waits == [1.0, 3.0, 9.0]


def test_client_errors_are_not_retried():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(401)

    source, _ = crm(handler)
    with pytest.raises(CrmExtractError):
        source.get_organization("5")
    assert len(calls) == 1


def test_identity_directory_batches_and_caches_per_run():
    requests = []

    def handler(request):
        requests.append(request)
        emails = request.url.params["emails"].split(",")
        return httpx.Response(
            200,
            json={
                "data": [
                    {"email": e, "sso_id": f"sso-{e}"} for e in emails if e.startswith("known")
                ]
            },
        )

    directory = HttpIdentityDirectory(root_url="https://id.test", batch_size=2)
    directory.with_transport(httpx.MockTransport(handler))
    emails = ["known1@x", "Known2@X", "other@x"]
    assert directory.resolve("co-1", emails) == {
        "known1@x": "sso-known1@x",
        "known2@x": "sso-known2@x",
    }
    assert len(requests) == 2 and requests[0].url.path == "/private/users"
    assert requests[0].url.params["company_sso_id"] == "co-1"
    assert directory.resolve("co-1", emails) == {
        "known1@x": "sso-known1@x",
        "known2@x": "sso-known2@x",
    }
    assert len(requests) == 2  # cached


def test_identity_outage_raises_lookup_error():
    directory = HttpIdentityDirectory(root_url="https://id.test")
    directory.with_transport(httpx.MockTransport(lambda r: httpx.Response(503)))
    with pytest.raises(IdentityLookupError):
        directory.resolve("co-1", ["a@x"])
