"""CrmSource: read-only extraction of one CID's notes — and of its audits (SPEC-activity-logs
§2-§3: the Stage-0 probe, keyset pages on ``audits.id``, the [N1] account predicate, batched
``users`` lookups) — from the legacy CRM."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import httpx
import psycopg2
import psycopg2.extras
import tenacity
from pydantic import Field, PrivateAttr
from typing_extensions import override

from notes_pipeline.core.crm_records import (
    AuditProbe,
    AuditScope,
    CrmAttachment,
    CrmAudit,
    CrmNote,
    CrmUser,
    Organization,
)
from notes_pipeline.core.parsing import ascii_int
from notes_pipeline.core.resources.crm_api import (
    CrmApiShapeError,
    decode_page,
    item_id,
    note_from_api,
)
from notes_pipeline.core.resources.tls import client_ssl_context
from notes_pipeline.core.vocabulary import RunCode


def retry_with_backoff(
    backoff_s: Sequence[float],
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    sleep: Callable[[float], None],
) -> tenacity.Retrying:
    """A tenacity retrier: one attempt, then one more after each wait of ``backoff_s``
    (seconds), on ``retry_on`` only; the last exception is re-raised."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(len(backoff_s) + 1),
        wait=tenacity.wait_chain(*(tenacity.wait_fixed(s) for s in backoff_s))
        if backoff_s
        else tenacity.wait_none(),
        retry=tenacity.retry_if_exception_type(retry_on),
        sleep=sleep,
        reraise=True,
    )


class CrmExtractError(Exception):
    """Extraction failed after the retry budget (reason CRM_EXTRACT_FAILED)."""

    reason_code = RunCode.CRM_EXTRACT_FAILED


class CrmSource(dg.ConfigurableResource):
    """What the pipeline needs from the CRM, whatever the transport."""

    def list_cids_with_person_notes(self) -> list[str]:
        """CIDs (text) with at least one Person note, in numeric order."""
        raise NotImplementedError

    def get_organization(self, cid: str) -> Organization:
        """The CID's organization. Raises ``LookupError`` for an unknown CID."""
        raise NotImplementedError

    def iter_note_pages(self, cid: str, page_size: int) -> Iterator[list[CrmNote]]:
        """The CID's notes (all kinds) in pages of at most ``page_size``, in id order; a row
        that cannot be read is a ``CrmNote.unreadable``. Raises ``CrmExtractError``."""
        raise NotImplementedError

    def count_in_scope_notes(self, cid: str, note_type_ids: Sequence[int]) -> int:
        """Person notes of the CID whose type is in scope (validation's source count)."""
        return sum(
            1
            for page in self.iter_note_pages(cid, 1000)
            for note in page
            if note.crm_person_id is not None and note.crm_note_type_id in set(note_type_ids)
        )

    # --- audits (SPEC-activity-logs §2-§3) ----------------------------------------------
    # Sources without audit access (the HTTP API) raise NotImplementedError from these.
    def with_backoff(self, backoff_s: Sequence[float]) -> CrmSource:
        """This source with ``backoff_s`` (seconds before each retry of a failed audit query,
        §3 [N23]); sources without retries return themselves."""
        return self

    def list_cids_with_audits(
        self, auditable_kinds: Mapping[str, str], exclude: Iterable[str] = ()
    ) -> list[str]:
        """CIDs (not in ``exclude``) owning at least one in-scope audit by the account
        predicate [N1], in numeric order (discovery). ``auditable_kinds``: type → kind."""
        raise NotImplementedError

    def audit_high_water_id(self) -> int:
        """``max(audits.id)`` now (0 for an empty table): the run's upper bound [N13]."""
        raise NotImplementedError

    def probe_audits(
        self, scope: AuditScope, page_size: int = 500, *, count_unattributable: bool = True
    ) -> AuditProbe:
        """The Stage-0 probe of ``scope`` (§3, OQ-2): MIN/MAX(created_at), COUNT, the
        unattributable count (unless ``count_unattributable`` is False: then None) and the
        first page's ``EXPLAIN`` summary. Raises ``CrmExtractError`` (``CRM_EXTRACT_FAILED``)
        when the CRM cannot answer."""
        raise NotImplementedError

    def iter_audit_pages(
        self,
        scope: AuditScope,
        page_size: int = 500,
        *,
        start_after: int = 0,
        stop_at: int | None = None,
    ) -> Iterator[list[CrmAudit]]:
        """Keyset pages of ≤ ``page_size`` in-scope audits of the CID in ``audits.id`` order
        (§3): ``id > cursor AND id <= high_water_id AND auditable_type IN (…) AND
        created_at >= cutoff`` and the account predicate. ``scope.cutoff`` must be set (the
        probe's). ``start_after``/``stop_at``: the probe's first id − 1 and last id, which
        only shorten the scan. A row that cannot be converted is yielded as
        ``CrmAudit.unreadable`` (it fails alone); raises ``CrmExtractError`` after retries."""
        raise NotImplementedError

    def users_by_id(self, user_ids: Iterable[int]) -> dict[int, CrmUser]:
        """Hop 1 of the actor lookup, batched (§4.4 [N10]): ``users`` rows by id; ids without
        a row are absent (actor case A4)."""
        raise NotImplementedError


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
    """Reads the CRM's PostgreSQL with a read-only DSN, keyset-paginated by note id (notes)
    or audit id (audits: SPEC-activity-logs §3, every query parameterized, read-only)."""

    dsn: str = Field(description="Read-only PostgreSQL DSN of the CRM.")
    backoff_s: list[float] = Field(
        default=[1.0, 3.0, 9.0],
        description="Seconds before each retry of a failed audit query; after the last, "
        "CRM_EXTRACT_FAILED (SPEC-activity-logs §3 [N23]).",
    )

    _sleep: Callable[[float], None] = PrivateAttr(default=time.sleep)

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

    @override
    def list_cids_with_person_notes(self) -> list[str]:
        with self._cursor() as cur:
            cur.execute(
                "SELECT DISTINCT organization_id FROM crm_notes WHERE crm_person_id IS NOT NULL "
                "ORDER BY organization_id"
            )
            return [str(row["organization_id"]) for row in cur.fetchall()]

    @override
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

    @override
    def iter_note_pages(self, cid: str, page_size: int) -> Iterator[list[CrmNote]]:
        org = int(cid)
        after = -(2**63)  # ids are bigint: 0 and negative ids are notes too
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

    # --- audits ----------------------------------------------------------------------
    def with_backoff(self, backoff_s: Sequence[float]) -> PostgresCrmSource:
        """This source with the waits (seconds) between extraction retries replaced."""
        copy = self.model_copy(update={"backoff_s": [float(s) for s in backoff_s]})
        copy._sleep = self._sleep
        return copy

    def _audit_query(
        self, session: _ReadOnlySession, what: str, sql: str, params: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Run one audit query: connection and server errors are retried after each wait of
        ``backoff_s`` on a new connection; then, or on any other database error,
        ``CrmExtractError`` naming ``what`` and the error class (never SQL or values)."""

        def attempt() -> list[dict[str, Any]]:
            try:
                with session.cursor() as cur:
                    cur.execute(sql, params)
                    return cur.fetchall()
            except RETRYABLE_PG_ERRORS:
                session.reset()
                raise

        retrying = retry_with_backoff(self.backoff_s, RETRYABLE_PG_ERRORS, self._sleep)
        try:
            return retrying(attempt)
        except psycopg2.Error as exc:
            raise CrmExtractError(
                f"{RunCode.CRM_EXTRACT_FAILED}: {what} failed ({type(exc).__name__})"
            ) from None

    @override
    def list_cids_with_audits(
        self, auditable_kinds: Mapping[str, str], exclude: Iterable[str] = ()
    ) -> list[str]:
        params = {
            **audit_params(AuditScope("0", dict(auditable_kinds), 0)),
            "exclude": sorted({n for c in exclude if (n := ascii_int(str(c))) is not None}),
        }
        session = _ReadOnlySession(self.dsn)
        try:
            rows = self._audit_query(
                session, "discovery", cids_with_audits_sql(auditable_kinds), params
            )
        finally:
            session.close()
        return [str(row["id"]) for row in rows]

    @override
    def audit_high_water_id(self) -> int:
        session = _ReadOnlySession(self.dsn)
        try:
            [row] = self._audit_query(
                session, "high-water id", "SELECT COALESCE(max(id), 0) AS hw FROM audits", {}
            )
        finally:
            session.close()
        return int(row["hw"])

    def probe_audits(
        self, scope: AuditScope, page_size: int = 500, *, count_unattributable: bool = True
    ) -> AuditProbe:
        """Three queries on one read-only connection: the CID's figures (its audit ids from
        the owner tables' indexes), the table-wide unattributable count, and ``EXPLAIN
        (ANALYZE, FORMAT JSON)`` of the first page query (which runs that page once)."""
        kinds = scope.auditable_kinds
        params = audit_params(scope)
        session = _ReadOnlySession(self.dsn)
        try:
            [row] = self._audit_query(session, "Stage-0 probe", probe_sql(kinds), params)
            cutoff = scope.cutoff if scope.cutoff is not None else row["min_created_at"]
            windowed = {**params, "cutoff": cutoff}
            unattributable = None
            if count_unattributable:
                [counted] = self._audit_query(
                    session, "unattributable count", unattributable_sql(kinds), windowed
                )
                unattributable = int(counted["n"])
            first_id = row["first_id"]
            explain_params = {
                **windowed,
                "cutoff": cutoff if cutoff is not None else "-infinity",
                "cursor": (first_id - 1) if first_id is not None else 0,
                "limit": page_size,
            }
            [plan] = self._audit_query(
                session,
                "EXPLAIN of the page query",
                "EXPLAIN (ANALYZE, FORMAT JSON) " + page_sql(kinds),
                explain_params,
            )
        finally:
            session.close()
        raw_plan = plan["QUERY PLAN"]
        return AuditProbe(
            high_water_id=scope.high_water_id,
            cutoff=None if cutoff is None else str(cutoff),
            min_created_at=row["min_created_at"],
            max_created_at=row["max_created_at"],
            count=int(row["n"]),
            first_id=first_id,
            last_id=row["last_id"],
            null_created_at=int(row["null_created_at"]),
            unattributable=unattributable,
            explain=summarize_explain(
                json.loads(raw_plan) if isinstance(raw_plan, str) else raw_plan
            ),
        )

    @override
    def iter_audit_pages(
        self,
        scope: AuditScope,
        page_size: int = 500,
        *,
        start_after: int = 0,
        stop_at: int | None = None,
    ) -> Iterator[list[CrmAudit]]:
        sql = page_sql(scope.auditable_kinds)
        params = {**audit_params(scope), "limit": page_size}
        cursor = start_after
        session = _ReadOnlySession(self.dsn)
        try:
            while True:
                rows = self._audit_query(
                    session, f"audit page after id {cursor}", sql, {**params, "cursor": cursor}
                )
                if not rows:
                    return
                yield [read_audit_row(row) for row in rows]
                cursor = int(rows[-1]["id"])
                if len(rows) < page_size or (stop_at is not None and cursor >= stop_at):
                    return
        finally:
            session.close()

    @override
    def users_by_id(self, user_ids: Iterable[int]) -> dict[int, CrmUser]:
        ids = sorted({int(i) for i in user_ids})
        found: dict[int, CrmUser] = {}
        if not ids:
            return found
        session = _ReadOnlySession(self.dsn)
        try:
            for start in range(0, len(ids), USERS_CHUNK):
                chunk = ids[start : start + USERS_CHUNK]
                for row in self._audit_query(session, "users lookup", _USERS_SQL, {"ids": chunk}):
                    found[int(row["id"])] = CrmUser(
                        id=int(row["id"]),
                        email=row["email"],
                        full_name=row["full_name"],
                        deleted_at=row["deleted_at"],
                    )
        finally:
            session.close()
        return found

    @override
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


# --- audits (SPEC-activity-logs §2-§3) ----------------------------------------------------

#: The CRM owner table of each auditable kind: the whitelist the account predicate [N1] is
#: built from (table names never come from configuration; the types are query parameters).
OWNER_TABLES: dict[str, str] = {
    "person": "crm_people",
    "deal": "crm_deals",
    "task": "crm_tasks",
    "ticket": "crm_tickets",
    "join:deal": "crm_deal_people",
    "join:task": "crm_task_people",
    "join:ticket": "crm_ticket_people",
}
_AUDIT_COLUMNS = (
    "a.id, a.auditable_type, a.auditable_id, a.associated_type, a.associated_id, a.user_id, "
    "a.action, a.audited_changes, a.comment, a.version, a.created_at::text AS created_at"
)
_USERS_SQL = (
    "SELECT id, email, full_name, deleted_at::text AS deleted_at FROM users WHERE id = ANY(%(ids)s)"
)
USERS_CHUNK = 1000  # ids per hop-1 query


def _kind_param(kind: str) -> str:
    return "k_" + kind.replace(":", "_")


def _owned_kinds(auditable_kinds: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(kind, owner table, parameter name) of each kind that has an owner table and at least
    one in-scope type, in ``OWNER_TABLES`` order."""
    kinds = set(auditable_kinds.values())
    return [(k, t, _kind_param(k)) for k, t in OWNER_TABLES.items() if k in kinds]


def audit_params(scope: AuditScope) -> dict[str, Any]:
    """The query parameters every audit query of ``scope`` shares: org, types, kinds' types,
    high-water id and cutoff (None → ``-infinity`` in SQL: every non-null ``created_at``)."""
    params: dict[str, Any] = {
        "org": int(scope.cid),
        "types": scope.auditable_types,
        "high_water": scope.high_water_id,
        "cutoff": scope.cutoff,
    }
    for kind, _table, name in _owned_kinds(scope.auditable_kinds):
        params[name] = sorted(t for t, k in scope.auditable_kinds.items() if k == kind)
    return params


def account_predicate(auditable_kinds: Mapping[str, str], *, any_account: bool = False) -> str:
    """[N1] as SQL over ``audits a``: the audit's (auditable_type, auditable_id) or
    (associated_type, associated_id) names a row of a mapped owner table of ``%(org)s`` —
    or, with ``any_account``, of any account (what ``unattributable`` negates)."""
    org = "" if any_account else " AND o.organization_id = %(org)s"
    terms = [
        f"(a.{side}_type = ANY(%({name})s) AND EXISTS "
        f"(SELECT 1 FROM {table} o WHERE o.id = a.{side}_id{org}))"
        for _kind, table, name in _owned_kinds(auditable_kinds)
        for side in ("auditable", "associated")
    ]
    return "(" + (" OR ".join(terms) or "false") + ")"


def owned_audit_ids_sql(auditable_kinds: Mapping[str, str]) -> str:
    """The ids of the audits ``%(org)s`` owns by [N1], as a UNION driven by the owner tables'
    ``(organization_id, id)`` indexes and the gem's ``auditable_index``/``associated_index``
    (one CID's audits, never a scan of the whole table)."""
    parts = [
        f"SELECT a.id FROM {table} o JOIN audits a ON a.{side}_id = o.id "
        f"AND a.{side}_type = ANY(%({name})s) WHERE o.organization_id = %(org)s"
        for _kind, table, name in _owned_kinds(auditable_kinds)
        for side in ("auditable", "associated")
    ]
    return "\nUNION\n".join(parts) or "SELECT NULL::bigint AS id WHERE false"


def page_sql(auditable_kinds: Mapping[str, str]) -> str:
    """The keyset page query of §3 with the account predicate [N1] (parameters: ``cursor``,
    ``high_water``, ``types``, ``cutoff``, ``org``, the kinds' types, ``limit``)."""
    return (
        f"SELECT {_AUDIT_COLUMNS}\nFROM audits a\n"
        "WHERE a.id > %(cursor)s AND a.id <= %(high_water)s\n"
        "  AND a.auditable_type = ANY(%(types)s)\n"
        "  AND a.created_at >= %(cutoff)s::timestamp\n"
        f"  AND {account_predicate(auditable_kinds)}\n"
        "ORDER BY a.id\nLIMIT %(limit)s"
    )


def probe_sql(auditable_kinds: Mapping[str, str]) -> str:
    """MIN/MAX(created_at), the null-``created_at`` count, COUNT and first/last id of the
    CID's in-scope audits ≤ high-water (COUNT and ids: ``created_at >= cutoff``)."""
    window = "a.created_at >= COALESCE(%(cutoff)s::timestamp, '-infinity'::timestamp)"
    return (
        f"WITH owned AS (\n{owned_audit_ids_sql(auditable_kinds)}\n)\n"
        "SELECT min(a.created_at)::text AS min_created_at, "
        "max(a.created_at)::text AS max_created_at,\n"
        "       count(*) FILTER (WHERE a.created_at IS NULL) AS null_created_at,\n"
        f"       count(*) FILTER (WHERE {window}) AS n,\n"
        f"       min(a.id) FILTER (WHERE {window}) AS first_id,\n"
        f"       max(a.id) FILTER (WHERE {window}) AS last_id\n"
        "FROM audits a JOIN owned ON owned.id = a.id\n"
        "WHERE a.id <= %(high_water)s AND a.auditable_type = ANY(%(types)s)"
    )


def unattributable_sql(auditable_kinds: Mapping[str, str]) -> str:
    """In-scope audits in the window (≤ high-water, ≥ cutoff) that no account owns [N1]."""
    return (
        "SELECT count(*) AS n FROM audits a\n"
        "WHERE a.id <= %(high_water)s AND a.auditable_type = ANY(%(types)s)\n"
        "  AND a.created_at >= COALESCE(%(cutoff)s::timestamp, '-infinity'::timestamp)\n"
        f"  AND {account_predicate(auditable_kinds, any_account=True)} IS NOT TRUE"
    )


def cids_with_audits_sql(auditable_kinds: Mapping[str, str]) -> str:
    """Accounts (not in ``%(exclude)s``) owning at least one in-scope audit [N1]: one
    ``EXISTS`` per owner table and side, stopping at the first audit found."""
    terms = [
        f"EXISTS (SELECT 1 FROM {table} w JOIN audits a ON a.{side}_id = w.id "
        f"AND a.{side}_type = ANY(%({name})s) AND a.auditable_type = ANY(%(types)s) "
        "WHERE w.organization_id = org.id)"
        for _kind, table, name in _owned_kinds(auditable_kinds)
        for side in ("auditable", "associated")
    ]
    return (
        "SELECT org.id FROM organizations org\n"
        "WHERE NOT (org.id = ANY(%(exclude)s))\n"
        f"  AND ({' OR '.join(terms) or 'false'})\nORDER BY org.id"
    )


def summarize_explain(plan: Any) -> dict[str, Any]:
    """``EXPLAIN (ANALYZE, FORMAT JSON)`` output → a JSON-safe summary (§15): node types in
    plan order, the indexes and relations each scan used, estimated and actual rows of the
    top node, planning and execution time in ms, and whether any index was used. Structure
    only: the plan's filters (which quote parameters) are left out."""
    root = plan[0] if isinstance(plan, list) else plan
    top = root.get("Plan", {}) if isinstance(root, dict) else {}
    node_types: list[str] = []
    index_scans: list[str] = []
    seq_scans: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = str(node.get("Node Type", "?"))
        if kind not in node_types:
            node_types.append(kind)
        if "Index Name" in node and node["Index Name"] not in index_scans:
            index_scans.append(str(node["Index Name"]))
        if kind == "Seq Scan" and node.get("Relation Name") not in seq_scans:
            seq_scans.append(str(node.get("Relation Name")))
        for child in node.get("Plans", []) or []:
            walk(child)

    if top:
        walk(top)
    return {
        "node_types": node_types,
        "index_scans": index_scans,
        "seq_scans": seq_scans,
        "uses_index": bool(index_scans),
        "estimated_rows": top.get("Plan Rows"),
        "actual_rows": top.get("Actual Rows"),
        "total_cost": top.get("Total Cost"),
        "planning_ms": root.get("Planning Time") if isinstance(root, dict) else None,
        "execution_ms": root.get("Execution Time") if isinstance(root, dict) else None,
    }


def _audit_from_row(row: Mapping[str, Any]) -> CrmAudit:
    return CrmAudit(
        id=int(row["id"]),
        auditable_type=row["auditable_type"],
        auditable_id=row["auditable_id"],
        associated_type=row["associated_type"],
        associated_id=row["associated_id"],
        user_id=row["user_id"],
        action=row["action"],
        audited_changes=row["audited_changes"],
        comment=row["comment"],
        version=row["version"],
        created_at=row["created_at"],
    )


def read_audit_row(row: Mapping[str, Any], convert: Callable[..., CrmAudit] = _audit_from_row):
    """``convert(row)``, or ``CrmAudit.unreadable`` when it raises (one bad row fails alone
    as ``transform_error``). Raises ``CrmExtractError`` only when the row has no integer id."""
    try:
        return convert(row)
    except Exception as exc:  # noqa: BLE001 - the audit is planned as transform_error
        try:
            identifier = int(row["id"])
        except (TypeError, ValueError, KeyError):
            raise CrmExtractError(
                f"{RunCode.CRM_EXTRACT_FAILED}: an audit without an integer id "
                f"({type(exc).__name__})"
            ) from None
        return CrmAudit.unreadable(identifier, exc)


#: Errors worth another attempt: the connection dropped, the server restarted or cancelled.
RETRYABLE_PG_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


class _ReadOnlySession:
    """One read-only, autocommit connection (UTC, ISO dates), reopened after a failure."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: Any = None

    def cursor(self) -> psycopg2.extras.RealDictCursor:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(self._dsn)
            self._conn.set_session(readonly=True, autocommit=True)
            with self._conn.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'; SET DateStyle TO 'ISO, YMD'")
        return self._conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)

    def reset(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
        self._conn = None

    def close(self) -> None:
        self.reset()


RETRYABLE_STATUS = frozenset({423, 429})
MAX_STALE_PAGES = 3  # API pages in a row with no new note before paging stops


class _RetryableResponse(Exception):
    """A transport error or a 5xx/423/429 answer (args[0]: what happened, no URL)."""


class _FinalResponse(Exception):
    """A 4xx answer that a retry cannot fix."""


def _get_body(client: httpx.Client, path: str, params: dict[str, Any] | None) -> bytes:
    try:
        response = client.get(path, params=params)
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        raise _RetryableResponse(type(exc).__name__) from exc
    if response.status_code < 400:
        return response.content
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

    def _get(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        decode: Callable[[bytes], Any] = json.loads,
    ) -> Any:
        """GET ``path`` → ``decode(body)``. Transport errors, 5xx, 423 and 429 are retried after
        each wait of ``backoff_s`` (seconds); then, on another 4xx, or when the body cannot be
        decoded, ``CrmExtractError``."""
        with httpx.Client(
            base_url=self.base_url,
            timeout=self.timeout_s,
            headers={"Authorization": self.api_token},
            transport=self._transport,
            verify=client_ssl_context(),
        ) as client:
            retrying = retry_with_backoff(self.backoff_s, _RetryableResponse, self._sleep)
            try:
                return decode(retrying(_get_body, client, path, params))
            except (_RetryableResponse, _FinalResponse, CrmApiShapeError) as exc:
                raise CrmExtractError(
                    f"{RunCode.CRM_EXTRACT_FAILED}: GET {path} failed ({exc.args[0]})"
                ) from None
            except (ValueError, RecursionError) as exc:
                raise CrmExtractError(
                    f"{RunCode.CRM_EXTRACT_FAILED}: GET {path} failed ({type(exc).__name__})"
                ) from None

    @override
    def list_cids_with_person_notes(self) -> list[str]:
        body = self._get("/api/v4/organizations", {"has_person_notes": "true"})
        return sorted((str(item["id"]) for item in body["data"]), key=int)

    @override
    def get_organization(self, cid: str) -> Organization:
        body = self._get(f"/api/v4/organizations/{cid}")
        return Organization(
            cid=str(body["id"]), name=body["name"], company_sso_id=body["company_sso_id"]
        )

    def iter_note_pages(self, cid: str, page_size: int) -> Iterator[list[CrmNote]]:
        """Pages of the CID's notes; an item repeated by the API is read once. Paging stops at
        ``meta.total_pages``, at an empty page, or after ``MAX_STALE_PAGES`` pages in a row that
        bring no new item (an API that ignores ``page``)."""
        org, page, seen, stale = int(cid), 1, set(), 0
        total_pages: int | None = None
        while True:
            items, reported = self._get(
                "/api/v4/notes",
                {"organization_id": cid, "page": page, "per_page": page_size},
                decode=decode_page,
            )
            total_pages = reported if total_pages is None else total_pages
            notes = []
            for index, item in enumerate(items):
                key = item_id(item)
                if key is not None and key in seen:
                    continue
                if key is not None:
                    seen.add(key)
                notes.append(note_from_api(item, org, f"p{page}i{index}"))
            if notes:
                yield notes
            stale = 0 if notes else stale + 1
            if not items or stale >= MAX_STALE_PAGES:
                return
            if total_pages is not None and page >= total_pages:
                return
            page += 1
