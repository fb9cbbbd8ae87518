"""CrmSource: read-only extraction of one CID's notes from the legacy CRM."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import httpx
import psycopg2
import psycopg2.extras
import tenacity
from pydantic import Field, PrivateAttr

from notes_pipeline.core.crm_records import CrmAttachment, CrmNote, Organization
from notes_pipeline.core.vocabulary import RunCode


class CrmExtractError(Exception):
    """Extraction failed after the retry budget (reason CRM_EXTRACT_FAILED)."""

    reason_code = RunCode.CRM_EXTRACT_FAILED


class CrmSource(dg.ConfigurableResource):
    """What the pipeline needs from the CRM, whatever the transport."""

    def list_cids_with_person_notes(self) -> list[str]:
        raise NotImplementedError

    def get_organization(self, cid: str) -> Organization:
        raise NotImplementedError

    def iter_note_pages(self, cid: str, page_size: int) -> Iterator[list[CrmNote]]:
        raise NotImplementedError

    def count_in_scope_notes(self, cid: str, note_type_ids: Sequence[int]) -> int:
        """Person notes of the CID whose type is in scope (validation's source count)."""
        return sum(
            1
            for page in self.iter_note_pages(cid, 1000)
            for note in page
            if note.crm_person_id is not None and note.crm_note_type_id in set(note_type_ids)
        )


_NOTES_PAGE_SQL = """
SELECT n.id, n.organization_id, n.type, n.crm_person_id, n.crm_company_id, n.crm_deal_id,
       n.crm_ticket_id, n.crm_note_type_id, n.note, n.creator_id,
       u.full_name AS creator_name, u.email AS creator_email,
       n.created_at::text AS created_at, n.updated_at::text AS updated_at
FROM crm_notes n
LEFT JOIN users u ON u.id = n.creator_id AND u.organization_id = n.organization_id
WHERE n.organization_id = %(org)s AND n.id > %(after)s
ORDER BY n.id
LIMIT %(limit)s
"""
_ASSETS_SQL = """
SELECT a.id, a.assetable_id, a.kind, a.file_url, a.file_name, a.content_type, a.file_size
FROM assets a JOIN crm_notes n ON n.id = a.assetable_id
WHERE a.assetable_type = 'Crm::Note' AND a.assetable_id = ANY(%(ids)s)
  AND n.organization_id = %(org)s
ORDER BY a.assetable_id, CASE a.kind WHEN 'image' THEN 0 ELSE 1 END, a.id
"""
_DOCUMENTS_SQL = """
SELECT d.id, d.crm_note_id, d.file_url, d.file_name, d.content_type, d.file_size
FROM crm_note_attachments d JOIN crm_notes n ON n.id = d.crm_note_id
WHERE d.crm_note_id = ANY(%(ids)s) AND n.organization_id = %(org)s
ORDER BY d.crm_note_id, d.id
"""
_CHECKINS_SQL = """
SELECT DISTINCT c.crm_note_id FROM crm_checkins c JOIN crm_notes n ON n.id = c.crm_note_id
WHERE c.crm_note_id = ANY(%(ids)s) AND n.organization_id = %(org)s
"""


class PostgresCrmSource(CrmSource):
    """Reads the CRM's PostgreSQL with a read-only DSN, keyset-paginated by note id."""

    dsn: str = Field(description="Read-only PostgreSQL DSN of the CRM.")

    @contextmanager
    def _cursor(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        conn = psycopg2.connect(self.dsn)
        try:
            conn.set_session(readonly=True, autocommit=True)
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                # Timestamps are read as text in one known format (infinity, BC and years past
                # 9999 cannot become Python datetimes); transform.timestamps parses them.
                cur.execute("SET TIME ZONE 'UTC'; SET DateStyle TO 'ISO, YMD'")
                yield cur
        finally:
            conn.close()

    def list_cids_with_person_notes(self) -> list[str]:
        with self._cursor() as cur:
            cur.execute(
                "SELECT DISTINCT organization_id FROM crm_notes WHERE crm_person_id IS NOT NULL "
                "ORDER BY organization_id"
            )
            return [str(row["organization_id"]) for row in cur.fetchall()]

    def get_organization(self, cid: str) -> Organization:
        with self._cursor() as cur:
            cur.execute(
                "SELECT id, name, company_sso_id FROM organizations WHERE id = %s", (int(cid),)
            )
            row = cur.fetchone()
        if row is None:
            raise LookupError(f"CID {cid} not found in the CRM")
        return Organization(
            cid=str(row["id"]), name=row["name"], company_sso_id=row["company_sso_id"]
        )

    def iter_note_pages(self, cid: str, page_size: int) -> Iterator[list[CrmNote]]:
        org = int(cid)
        after = 0
        with self._cursor() as cur:
            while True:
                cur.execute(_NOTES_PAGE_SQL, {"org": org, "after": after, "limit": page_size})
                rows = cur.fetchall()
                if not rows:
                    return
                ids = [row["id"] for row in rows]
                attachments = _fetch_attachments(cur, org, ids)
                cur.execute(_CHECKINS_SQL, {"org": org, "ids": ids})
                checkins = {row["crm_note_id"] for row in cur.fetchall()}
                yield [
                    _read_row(
                        org,
                        row["id"],
                        _note_from_row,
                        row,
                        tuple(attachments.get(row["id"], ())),
                        row["id"] in checkins,
                    )
                    for row in rows
                ]
                after = ids[-1]

    def count_in_scope_notes(self, cid: str, note_type_ids: Sequence[int]) -> int:
        with self._cursor() as cur:
            cur.execute(
                "SELECT count(*) AS n FROM crm_notes WHERE organization_id = %s "
                "AND crm_person_id IS NOT NULL AND crm_note_type_id = ANY(%s)",
                (int(cid), list(note_type_ids)),
            )
            return int(cur.fetchone()["n"])


def _fetch_attachments(cur, org: int, ids: list[int]) -> dict[int, list[CrmAttachment]]:
    by_note: dict[int, list[CrmAttachment]] = {}
    cur.execute(_ASSETS_SQL, {"org": org, "ids": ids})
    for row in cur.fetchall():
        by_note.setdefault(row["assetable_id"], []).append(
            CrmAttachment(
                asset_id=f"a{row['id']}",
                kind=row["kind"],
                file_url=row["file_url"],
                file_name=row["file_name"],
                content_type=row["content_type"],
                file_size=row["file_size"],
            )
        )
    cur.execute(_DOCUMENTS_SQL, {"org": org, "ids": ids})
    for row in cur.fetchall():
        by_note.setdefault(row["crm_note_id"], []).append(
            CrmAttachment(
                asset_id=f"d{row['id']}",
                kind="document",
                file_url=row["file_url"],
                file_name=row["file_name"],
                content_type=row["content_type"],
                file_size=row["file_size"],
            )
        )
    return by_note


def _read_row(org: int, note_id: Any, convert: Callable[..., CrmNote], *args: Any) -> CrmNote:
    """``convert(*args)``, or a ``CrmNote.unreadable`` placeholder when it raises (issue #8: one
    bad row fails alone). Raises ``CrmExtractError`` only when the row has no integer id."""
    try:
        return convert(*args)
    except Exception as exc:  # noqa: BLE001 - the note is planned as NOTE_EXTRACT_ERROR
        try:
            identifier = int(note_id)
        except (TypeError, ValueError):
            raise CrmExtractError(
                f"{RunCode.CRM_EXTRACT_FAILED}: a note without an integer id ({type(exc).__name__})"
            ) from None
        return CrmNote.unreadable(identifier, org, exc)


def _note_from_row(row: dict[str, Any], attachments: tuple, has_checkin: bool) -> CrmNote:
    return CrmNote(
        id=int(row["id"]),
        organization_id=int(row["organization_id"]),
        type=row["type"],
        crm_person_id=row["crm_person_id"],
        crm_company_id=row["crm_company_id"],
        crm_deal_id=row["crm_deal_id"],
        crm_ticket_id=row["crm_ticket_id"],
        crm_note_type_id=row["crm_note_type_id"],
        note=row["note"],
        creator_id=row["creator_id"],
        creator_name=row.get("creator_name"),
        creator_email=row.get("creator_email"),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        attachments=attachments,
        has_checkin=has_checkin,
    )


RETRYABLE_STATUS = frozenset({423, 429})


class _RetryableResponse(Exception):
    """A transport error or a 5xx/423/429 answer (args[0]: what happened, no URL)."""


class _FinalResponse(Exception):
    """A 4xx answer that a retry cannot fix."""


def _get_json(client: httpx.Client, path: str, params: dict[str, Any] | None) -> Any:
    try:
        response = client.get(path, params=params)
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        raise _RetryableResponse(type(exc).__name__) from exc
    if response.status_code < 400:
        return response.json()
    if response.status_code >= 500 or response.status_code in RETRYABLE_STATUS:
        raise _RetryableResponse(f"HTTP {response.status_code}")
    raise _FinalResponse(f"HTTP {response.status_code}")


class HttpCrmSource(CrmSource):
    """The CRM notes API (`/api/v4/notes`, page/per_page) behind the same interface.

    Contract (stub until the CRM squad's org-scoped endpoint lands, PRD OQ-7):
    `GET {base_url}/api/v4/notes?organization_id=&page=&per_page=` →
    `{"data": [note...], "meta": {"total_pages": N}}`, each note with the `crm_notes` columns plus
    `creator: {full_name, email}`, `images`/`audios`/`documents` lists and `checkin` (or null);
    `GET {base_url}/api/v4/organizations/{cid}` → `{id, name, company_sso_id}`;
    `GET {base_url}/api/v4/organizations?has_person_notes=true` → `{"data": [{id}, ...]}`.
    """

    base_url: str
    api_token: str = Field(description="Sent as the Authorization header (CRM_API_AUTH).")
    timeout_s: float = 10.0
    backoff_s: list[float] = Field(default=[1.0, 3.0, 9.0], description="Waits between retries.")

    _sleep: Callable[[float], None] = PrivateAttr(default=time.sleep)
    _transport: httpx.BaseTransport | None = PrivateAttr(default=None)

    def with_transport(self, transport: httpx.BaseTransport) -> HttpCrmSource:
        """Route requests through `transport` (tests, proxies)."""
        self._transport = transport
        return self

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``path`` → its JSON body. Transport errors, 5xx, 423 and 429 are retried after
        each wait of ``backoff_s`` (seconds); then, or on another 4xx, ``CrmExtractError``."""
        with httpx.Client(
            base_url=self.base_url,
            timeout=self.timeout_s,
            headers={"Authorization": self.api_token},
            transport=self._transport,
        ) as client:
            retrying = tenacity.Retrying(
                stop=tenacity.stop_after_attempt(len(self.backoff_s) + 1),
                wait=tenacity.wait_chain(*(tenacity.wait_fixed(s) for s in self.backoff_s))
                if self.backoff_s
                else tenacity.wait_none(),
                retry=tenacity.retry_if_exception_type(_RetryableResponse),
                sleep=self._sleep,
                reraise=True,
            )
            try:
                return retrying(_get_json, client, path, params)
            except (_RetryableResponse, _FinalResponse) as exc:
                raise CrmExtractError(
                    f"{RunCode.CRM_EXTRACT_FAILED}: GET {path} failed ({exc.args[0]})"
                ) from None

    def list_cids_with_person_notes(self) -> list[str]:
        body = self._get("/api/v4/organizations", {"has_person_notes": "true"})
        return sorted((str(item["id"]) for item in body["data"]), key=int)

    def get_organization(self, cid: str) -> Organization:
        body = self._get(f"/api/v4/organizations/{cid}")
        return Organization(
            cid=str(body["id"]), name=body["name"], company_sso_id=body["company_sso_id"]
        )

    def iter_note_pages(self, cid: str, page_size: int) -> Iterator[list[CrmNote]]:
        page = 1
        while True:
            body = self._get(
                "/api/v4/notes", {"organization_id": cid, "page": page, "per_page": page_size}
            )
            notes = [
                _read_row(int(cid), _item_id(item), _note_from_api, item) for item in body["data"]
            ]
            if notes:
                yield notes
            if page >= int(body.get("meta", {}).get("total_pages", page)) or not notes:
                return
            page += 1


def _item_id(item: Any) -> Any:
    """The ``id`` of one API note, or None when the item is not an object."""
    return item.get("id") if isinstance(item, dict) else None


def _note_from_api(item: dict[str, Any]) -> CrmNote:
    def attachments(key: str, kind: str, prefix: str) -> list[CrmAttachment]:
        return [
            CrmAttachment(
                asset_id=f"{prefix}{a['id']}",
                kind=kind,
                file_url=a["file_url"],
                file_name=a["file_name"],
                content_type=a.get("content_type"),
                file_size=a.get("file_size"),
            )
            for a in item.get(key) or []
        ]

    creator = item.get("creator") or {}
    return CrmNote(
        id=int(item["id"]),
        organization_id=int(item["organization_id"]),
        type=item.get("type") or "",
        crm_person_id=item.get("crm_person_id"),
        crm_company_id=item.get("crm_company_id"),
        crm_deal_id=item.get("crm_deal_id"),
        crm_ticket_id=item.get("crm_ticket_id"),
        crm_note_type_id=item.get("crm_note_type_id"),
        note=item.get("note"),
        creator_id=item.get("creator_id"),
        creator_name=creator.get("full_name"),
        creator_email=creator.get("email"),
        created_at=item.get("created_at"),
        updated_at=item.get("updated_at"),
        attachments=tuple(
            attachments("images", "image", "a")
            + attachments("audios", "audio", "a")
            + attachments("documents", "document", "d")
        ),
        has_checkin=bool(item.get("checkin")),
    )
