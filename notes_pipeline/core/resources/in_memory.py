"""In-memory stand-ins for the CRM, CDP MongoDB, storage and identity service.

For fast tests beside the stack tests (never instead of them) and for the all-families smoke
test, as dagster's ``project_fully_featured`` does for its HN client. Dagster rebuilds
resources from their config for every step, so the data lives in a named ``InMemoryStore``
(``store`` field) rather than on the resource object.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from notes_pipeline.core.crm_records import CrmNote, Organization
from notes_pipeline.core.resources.attachment_download import AttachmentError
from notes_pipeline.core.resources.crm import CrmSource
from notes_pipeline.core.resources.identity import IdentityDirectory
from notes_pipeline.core.resources.mongo import BulkUpsertResult, CdpMongo
from notes_pipeline.core.resources.storage import AttachmentStorage
from notes_pipeline.core.vocabulary import AttachmentCode


@dataclass
class InMemoryStore:
    """Everything the fakes read and write; one per ``store`` name.

    ``organizations``/``notes``: the CRM, by CID. ``contacts``: company → crm person id →
    CDP contact id. ``contact_notes``: company → legacy id → document. ``sso_users``:
    company → lower-case email → SSO uuid. ``objects``: the CDP bucket, key → bytes.
    ``files``: what attachment URLs serve, url → (bytes, content type).
    """

    organizations: dict[str, Organization] = field(default_factory=dict)
    notes: dict[str, list[CrmNote]] = field(default_factory=dict)
    contacts: dict[str, dict[str, str]] = field(default_factory=dict)
    contact_notes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    sso_users: dict[str, dict[str, str]] = field(default_factory=dict)
    objects: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str | None]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_STORES: dict[str, InMemoryStore] = {}


def in_memory_store(name: str = "default", *, reset: bool = False) -> InMemoryStore:
    """The store called ``name`` (created on first use; emptied when ``reset``)."""
    if reset or name not in _STORES:
        _STORES[name] = InMemoryStore()
    return _STORES[name]


class InMemoryCrmSource(CrmSource):
    """The CRM from an ``InMemoryStore``; pages by ascending note id like the real source."""

    store: str = "default"

    def list_cids_with_person_notes(self) -> list[str]:
        notes = in_memory_store(self.store).notes
        with_person = [cid for cid, rows in notes.items() if any(n.crm_person_id for n in rows)]
        return sorted(with_person, key=int)

    def get_organization(self, cid: str) -> Organization:
        org = in_memory_store(self.store).organizations.get(cid)
        if org is None:
            raise LookupError(f"CID {cid} not found in the CRM")
        return org

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

    def ensure_indexes(self) -> str:
        return "in_memory"

    def drop_indexes(self) -> None:
        return None

    def contacts_by_crm_person_id(
        self, company_sso_id: str, crm_person_ids: Iterable[str]
    ) -> dict[str, str]:
        contacts = self._store().contacts.get(company_sso_id, {})
        return {pid: contacts[pid] for pid in set(crm_person_ids) if pid in contacts}

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

    def count_migrated(self, company_sso_id: str) -> int:
        return len(self._store().contact_notes.get(company_sso_id, {}))

    def find_migrated(
        self, company_sso_id: str, legacy_ids: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        notes = self._store().contact_notes.get(company_sso_id, {})
        keys = notes.keys() if legacy_ids is None else [k for k in legacy_ids if k in notes]
        return [dict(notes[k]) for k in keys]

    def duplicate_legacy_ids(self, company_sso_id: str) -> list[str]:
        return []  # the dict key is the unique index

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

    def close(self) -> None:
        return None


class InMemoryAttachmentStorage(AttachmentStorage):
    """The CDP bucket as a dict; downloads served from ``InMemoryStore.files``."""

    bucket: str = "memory"
    store: str = "default"

    def downloader(self, *args: Any, **kwargs: Any) -> InMemoryDownloader:
        return InMemoryDownloader(in_memory_store(self.store))

    def put(self, key: str, data: bytes, content_type: str | None) -> None:
        in_memory_store(self.store).objects[key] = bytes(data)

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in in_memory_store(self.store).objects if k.startswith(prefix))

    def delete_keys(self, keys: list[str]) -> int:
        objects = in_memory_store(self.store).objects
        for key in keys:
            objects.pop(key, None)
        return len(keys)

    def location(self, key: str) -> str:
        return f"memory://{self.store}/{key}"


class InMemoryIdentityDirectory(IdentityDirectory):
    """SSO users from ``InMemoryStore.sso_users``."""

    store: str = "default"

    def _lookup(self, company_sso_id: str, emails: list[str]) -> dict[str, str]:
        users = in_memory_store(self.store).sso_users.get(company_sso_id, {})
        return {email: users[email] for email in emails if email in users}
