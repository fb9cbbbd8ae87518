"""In-memory stand-ins for the CRM, CDP MongoDB, storage and identity service.

For fast tests beside the stack tests (never instead of them) and for the all-families smoke
test, as dagster's ``project_fully_featured`` does for its HN client. Dagster rebuilds
resources from their config for every step, so the data lives in a named ``InMemoryStore``
(``store`` field) rather than on the resource object.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from typing_extensions import override

from notes_pipeline.core.crm_records import (
    AuditProbe,
    AuditScope,
    CrmAudit,
    CrmNote,
    CrmUser,
    Organization,
)
from notes_pipeline.core.resources.attachment_download import AttachmentError
from notes_pipeline.core.resources.crm import CrmSource
from notes_pipeline.core.resources.identity import IdentityDirectory
from notes_pipeline.core.resources.mongo import BulkUpsertResult, CdpMongo
from notes_pipeline.core.resources.storage import AttachmentStorage
from notes_pipeline.core.vocabulary import AttachmentCode


@dataclass
class InMemoryStore:
    """Everything the fakes read and write; one per ``store`` name.

    ``organizations``/``notes``: the CRM, by CID. ``contacts``: company → crm person id
    (also the contact's ``source_id``) → CDP contact id. ``contact_notes``: company → legacy
    id → document. ``sso_users``: company → lower-case email → SSO uuid. ``objects``: the CDP
    bucket, key → bytes. ``files``: what attachment URLs serve, url → (bytes, content type).
    ``audits``: the CRM audits each CID owns ([N1] already applied), by CID. ``crm_users``:
    CRM ``users`` by id. ``contact_id_map``: company → crm person id → customer id.
    """

    organizations: dict[str, Organization] = field(default_factory=dict)
    notes: dict[str, list[CrmNote]] = field(default_factory=dict)
    contacts: dict[str, dict[str, str]] = field(default_factory=dict)
    contact_notes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    sso_users: dict[str, dict[str, str]] = field(default_factory=dict)
    objects: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str | None]] = field(default_factory=dict)
    audits: dict[str, list[CrmAudit]] = field(default_factory=dict)
    crm_users: dict[int, CrmUser] = field(default_factory=dict)
    contact_id_map: dict[str, dict[int, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_STORES: dict[str, InMemoryStore] = {}


def in_memory_store(name: str = "default", *, reset: bool = False) -> InMemoryStore:
    """The store called ``name`` (created on first use; emptied when ``reset``)."""
    if reset or name not in _STORES:
        _STORES[name] = InMemoryStore()
    return _STORES[name]


def _utc(value: Any) -> datetime | None:
    """A created_at/cutoff as a naive UTC datetime (zone-less = UTC); None if unusable."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


class _InMemoryAudits:
    """The audit side of ``InMemoryCrmSource`` (a mixin: resources are pydantic models)."""

    store: str

    def _in_scope(self, scope: AuditScope) -> list[CrmAudit]:
        rows = in_memory_store(self.store).audits.get(scope.cid, [])
        return sorted(
            (
                a
                for a in rows
                if a.auditable_type in scope.auditable_kinds and a.id <= scope.high_water_id
            ),
            key=lambda a: a.id,
        )

    def list_cids_with_audits(
        self, auditable_kinds: Mapping[str, str], exclude: Iterable[str] = ()
    ) -> list[str]:
        skip = set(exclude)
        audits = in_memory_store(self.store).audits
        found = [
            cid
            for cid, rows in audits.items()
            if cid not in skip and any(a.auditable_type in auditable_kinds for a in rows)
        ]
        return sorted(found, key=int)

    def audit_high_water_id(self) -> int:
        audits = in_memory_store(self.store).audits.values()
        return max((a.id for rows in audits for a in rows), default=0)

    def probe_audits(self, scope: AuditScope, page_size: int = 500, **_: Any) -> AuditProbe:
        rows = self._in_scope(scope)
        stamps = [t for t in (_utc(a.created_at) for a in rows) if t is not None]
        low = min(stamps, default=None)
        cutoff = _utc(scope.cutoff) if scope.cutoff is not None else low
        window = [a for a in rows if cutoff is not None and (_utc(a.created_at) or low) >= cutoff]
        window = [a for a in window if _utc(a.created_at) is not None]
        return AuditProbe(
            high_water_id=scope.high_water_id,
            cutoff=None if cutoff is None else str(cutoff),
            min_created_at=None if low is None else str(low),
            max_created_at=None if not stamps else str(max(stamps)),
            count=len(window),
            first_id=window[0].id if window else None,
            last_id=window[-1].id if window else None,
            null_created_at=sum(1 for a in rows if a.created_at is None),
            unattributable=0,
            explain={"node_types": ["InMemory"], "uses_index": False},
        )

    def iter_audit_pages(
        self,
        scope: AuditScope,
        page_size: int = 500,
        *,
        start_after: int = 0,
        stop_at: int | None = None,
    ) -> Iterator[list[CrmAudit]]:
        cutoff = _utc(scope.cutoff)
        rows = [
            a
            for a in self._in_scope(scope)
            if a.id > start_after
            and (stop_at is None or a.id <= stop_at)
            and cutoff is not None
            and (stamp := _utc(a.created_at)) is not None
            and stamp >= cutoff
        ]
        for start in range(0, len(rows), page_size):
            yield rows[start : start + page_size]

    def users_by_id(self, user_ids: Iterable[int]) -> dict[int, CrmUser]:
        users = in_memory_store(self.store).crm_users
        return {uid: users[uid] for uid in set(user_ids) if uid in users}


class InMemoryCrmSource(_InMemoryAudits, CrmSource):
    """The CRM from an ``InMemoryStore``; pages by ascending note (or audit) id like the real
    source. Its audits are already attributed to CIDs; the probe's EXPLAIN is a stub."""

    store: str = "default"

    @override
    def list_cids_with_person_notes(self) -> list[str]:
        notes = in_memory_store(self.store).notes
        with_person = [cid for cid, rows in notes.items() if any(n.crm_person_id for n in rows)]
        return sorted(with_person, key=int)

    @override
    def get_organization(self, cid: str) -> Organization:
        org = in_memory_store(self.store).organizations.get(cid)
        if org is None:
            raise LookupError(f"CID {cid} not found in the CRM")
        return org

    @override
    def iter_note_pages(self, cid: str, page_size: int) -> Iterator[list[CrmNote]]:
        rows = sorted(in_memory_store(self.store).notes.get(cid, []), key=lambda n: n.id)
        for start in range(0, len(rows), page_size):
            yield rows[start : start + page_size]


class InMemoryCdpMongo(CdpMongo):
    """CDP ``contacts``/``contact_notes`` in memory, with the unique key of the real index."""

    uri: str = "memory://"
    store: str = "default"

    def _store(self) -> InMemoryStore:
        return in_memory_store(self.store)

    @override
    def ensure_indexes(self) -> str:
        return "in_memory"

    @override
    def drop_indexes(self) -> None:
        return None

    @override
    def contacts_by_crm_person_id(
        self, company_sso_id: str, crm_person_ids: Iterable[str]
    ) -> dict[str, str]:
        contacts = self._store().contacts.get(company_sso_id, {})
        return {pid: contacts[pid] for pid in set(crm_person_ids) if pid in contacts}

    @override
    def contacts_by_source_id(
        self, company_sso_id: str, source_ids: Iterable[str]
    ) -> dict[str, list[Any]]:
        contacts = self._store().contacts.get(company_sso_id, {})
        return {sid: [contacts[sid]] for sid in set(source_ids) if sid in contacts}

    @override
    def contact_id_map(self, company_sso_id: str, crm_person_ids: Iterable[int]) -> dict[int, Any]:
        mapped = self._store().contact_id_map.get(company_sso_id, {})
        return {pid: mapped[pid] for pid in set(crm_person_ids) if pid in mapped}

    @override
    def company_contact_source_ids(
        self, company_sso_id: str, max_contacts: int
    ) -> dict[str, list[Any]] | None:
        contacts = self._store().contacts.get(company_sso_id, {})
        if len(contacts) > max_contacts:
            return None
        return {sid: [customer] for sid, customer in contacts.items()}

    @override
    def company_contact_id_map(self, company_sso_id: str, max_rows: int) -> dict[int, Any] | None:
        mapped = self._store().contact_id_map.get(company_sso_id, {})
        return None if len(mapped) > max_rows else dict(mapped)

    @override
    def upsert_notes(
        self, company_sso_id: str, documents: Sequence[dict[str, Any]]
    ) -> BulkUpsertResult:
        result = BulkUpsertResult()
        store = self._store()
        with store.lock:
            notes = store.contact_notes.setdefault(company_sso_id, {})
            for index, doc in enumerate(documents):
                if doc["company_sso_id"] != company_sso_id:
                    raise ValueError("document outside the company scope")
                key = doc["legacy_crm_note_id"]
                if key in notes:
                    result.matched.add(index)
                else:
                    notes[key] = dict(doc)
                    result.upserted.add(index)
        return result

    @override
    def count_migrated(self, company_sso_id: str) -> int:
        return len(self._store().contact_notes.get(company_sso_id, {}))

    @override
    def find_migrated(
        self, company_sso_id: str, legacy_ids: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        notes = self._store().contact_notes.get(company_sso_id, {})
        keys = notes.keys() if legacy_ids is None else [k for k in legacy_ids if k in notes]
        return [dict(notes[k]) for k in keys]

    @override
    def duplicate_legacy_ids(self, company_sso_id: str) -> list[str]:
        return []  # the dict key is the unique index

    @override
    def delete_migrated(self, company_sso_id: str) -> int:
        with self._store().lock:
            return len(self._store().contact_notes.pop(company_sso_id, {}))


class InMemoryDownloader:
    """``GuardedDownloader``'s interface over ``InMemoryStore.files`` (no network, no guard)."""

    def __init__(self, store: InMemoryStore) -> None:
        self._store = store

    def download(self, url: str) -> tuple[bytes, str | None]:
        """Body and content type; ``AttachmentError(ATTACHMENT_DOWNLOAD_FAILED)`` if absent."""
        if url not in self._store.files:
            raise AttachmentError(AttachmentCode.ATTACHMENT_DOWNLOAD_FAILED, "status=404")
        return self._store.files[url]

    @override
    def close(self) -> None:
        return None


class InMemoryAttachmentStorage(AttachmentStorage):
    """The CDP bucket as a dict; downloads served from ``InMemoryStore.files``."""

    bucket: str = "memory"
    store: str = "default"

    @override
    def downloader(self, *args: Any, **kwargs: Any) -> InMemoryDownloader:
        return InMemoryDownloader(in_memory_store(self.store))

    @override
    def put(self, key: str, data: bytes, content_type: str | None) -> None:
        in_memory_store(self.store).objects[key] = bytes(data)

    @override
    def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in in_memory_store(self.store).objects if k.startswith(prefix))

    @override
    def delete_keys(self, keys: list[str]) -> int:
        objects = in_memory_store(self.store).objects
        for key in keys:
            objects.pop(key, None)
        return len(keys)

    @override
    def location(self, key: str) -> str:
        return f"memory://{self.store}/{key}"


class InMemoryIdentityDirectory(IdentityDirectory):
    """SSO users from ``InMemoryStore.sso_users``."""

    store: str = "default"

    def _lookup(self, company_sso_id: str, emails: list[str]) -> dict[str, str]:
        users = in_memory_store(self.store).sso_users.get(company_sso_id, {})
        return {email: users[email] for email in emails if email in users}
