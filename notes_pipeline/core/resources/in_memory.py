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
from notes_pipeline.core.resources.mongo import (
    ATTACHMENT_ASSET_KEY,
    ATTACHMENT_UNAVAILABLE,
    BulkUpsertResult,
    CdpMongo,
)
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
    ``activity_logs``: company → external_id → document; ``activity_log_jobs``: job_id → job
    document; ``activity_log_locks``: company → lock; ``activity_log_failures``: rows.
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
    activity_logs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    activity_log_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    activity_log_locks: dict[str, dict[str, Any]] = field(default_factory=dict)
    activity_log_failures: list[dict[str, Any]] = field(default_factory=list)
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


def _upsert(
    stored: dict[Any, dict[str, Any]],
    company_sso_id: str,
    key_field: str,
    documents: Sequence[dict[str, Any]],
    recheck_matched: bool,
) -> BulkUpsertResult:
    """``mongo_writes.upsert_on_insert`` over one company's documents held by key."""
    result = BulkUpsertResult()
    for index, doc in enumerate(documents):
        if doc["company_sso_id"] != company_sso_id:
            raise ValueError("document outside the company scope")
        held = stored.get(doc[key_field])
        if held is None:
            stored[doc[key_field]] = dict(doc)
            result.upserted.add(index)
        elif recheck_matched and doc.get("_id") is not None and held.get("_id") == doc["_id"]:
            result.upserted.add(index)  # this row's own earlier attempt inserted it
        else:
            result.matched.add(index)
    return result


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
    def company_contacts_by_crm_person_id(
        self, company_sso_id: str, max_contacts: int
    ) -> dict[str, str] | None:
        contacts = self._store().contacts.get(company_sso_id, {})
        return None if len(contacts) > max_contacts else dict(contacts)

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
        self,
        company_sso_id: str,
        documents: Sequence[dict[str, Any]],
        *,
        recheck_matched: bool = False,
    ) -> BulkUpsertResult:
        store = self._store()
        with store.lock:
            notes = store.contact_notes.setdefault(company_sso_id, {})
            return _upsert(notes, company_sso_id, "legacy_crm_note_id", documents, recheck_matched)

    @override
    def count_migrated(self, company_sso_id: str) -> int:
        return len(self._store().contact_notes.get(company_sso_id, {}))

    @override
    def iter_migrated(self, company_sso_id: str) -> Iterator[dict[str, Any]]:
        notes = self._store().contact_notes.get(company_sso_id, {})
        yield from ({k: v for k, v in doc.items() if k != "_id"} for doc in list(notes.values()))

    @override
    def notes_with_unavailable_attachments(self, company_sso_id: str) -> dict[str, list[Any]]:
        notes = self._store().contact_notes.get(company_sso_id, {})
        return {
            key: [dict(a) for a in doc.get("attachments") or []]
            for key, doc in notes.items()
            if any(a.get(ATTACHMENT_UNAVAILABLE) is True for a in doc.get("attachments") or [])
        }

    @override
    def replace_attachment_placeholders(
        self,
        company_sso_id: str,
        legacy_crm_note_id: str,
        replacements: Sequence[tuple[int, str, Mapping[str, Any]]],
    ) -> bool:
        store = self._store()
        with store.lock:
            doc = store.contact_notes.get(company_sso_id, {}).get(legacy_crm_note_id)
            if doc is None:
                return False
            attachments = list(doc.get("attachments") or [])
            for position, asset_key, _ in replacements:
                held = attachments[position] if 0 <= position < len(attachments) else {}
                if (
                    held.get(ATTACHMENT_ASSET_KEY) != asset_key
                    or held.get(ATTACHMENT_UNAVAILABLE) is not True
                ):
                    return False  # a guard failed: nothing written, as on the server
            for position, _, entry in replacements:
                attachments[position] = dict(entry)
            doc["attachments"] = attachments
            return True

    @override
    def duplicate_legacy_ids(self, company_sso_id: str) -> list[str]:
        return []  # the dict key is the unique index

    @override
    def delete_migrated(self, company_sso_id: str) -> int:
        with self._store().lock:
            return len(self._store().contact_notes.pop(company_sso_id, {}))

    @override
    def ensure_activity_log_indexes(self) -> dict[str, str]:
        return {"in_memory": "unique"}

    @override
    def upsert_activity_logs(
        self,
        company_sso_id: str,
        documents: Sequence[dict[str, Any]],
        *,
        recheck_matched: bool = False,
    ) -> BulkUpsertResult:
        store = self._store()
        with store.lock:
            logs = store.activity_logs.setdefault(company_sso_id, {})
            return _upsert(logs, company_sso_id, "external_id", documents, recheck_matched)

    @override
    def count_activity_logs(self, company_sso_id: str) -> int:
        return len(self._store().activity_logs.get(company_sso_id, {}))

    @override
    def iter_activity_logs(self, company_sso_id: str) -> Iterable[dict[str, Any]]:
        return [dict(d) for d in self._store().activity_logs.get(company_sso_id, {}).values()]

    @override
    def delete_activity_logs(self, company_sso_id: str) -> int:
        with self._store().lock:
            return len(self._store().activity_logs.pop(company_sso_id, {}))

    @override
    def insert_job(self, job: dict[str, Any]) -> None:
        with self._store().lock:
            jobs = self._store().activity_log_jobs
            if job["job_id"] in jobs:
                raise ValueError("duplicate job_id")
            jobs[job["job_id"]] = {"_id": job["job_id"], **job}

    @override
    def update_job(self, job_id: str, fields: dict[str, Any]) -> None:
        with self._store().lock:
            if job_id in self._store().activity_log_jobs:
                self._store().activity_log_jobs[job_id].update(fields)

    @override
    def find_job(self, job_id: str) -> dict[str, Any] | None:
        job = self._store().activity_log_jobs.get(job_id)
        return dict(job) if job else None

    @override
    def jobs_of(self, company_sso_id: str) -> list[dict[str, Any]]:
        jobs = [
            dict(j)
            for j in self._store().activity_log_jobs.values()
            if j["company_sso_id"] == company_sso_id
        ]
        return sorted(jobs, key=lambda j: str(j.get("started_at") or ""), reverse=True)

    @override
    def acquire_job_lock(self, company_sso_id: str, job_id: str) -> dict[str, Any] | None:
        with self._store().lock:
            locks = self._store().activity_log_locks
            held = locks.setdefault(company_sso_id, {"_id": company_sso_id, "job_id": job_id})
            return None if held["job_id"] == job_id else dict(held)

    @override
    def take_over_job_lock(self, company_sso_id: str, stale_job_id: str, job_id: str) -> bool:
        with self._store().lock:
            held = self._store().activity_log_locks.get(company_sso_id)
            if held is None or held["job_id"] != stale_job_id:
                return False
            held["job_id"] = job_id
            return True

    @override
    def release_job_lock(self, company_sso_id: str, job_id: str) -> None:
        with self._store().lock:
            locks = self._store().activity_log_locks
            if locks.get(company_sso_id, {}).get("job_id") == job_id:
                del locks[company_sso_id]

    @override
    def job_lock(self, company_sso_id: str) -> dict[str, Any] | None:
        held = self._store().activity_log_locks.get(company_sso_id)
        return dict(held) if held else None

    @override
    def record_failures(self, failures: Sequence[dict[str, Any]]) -> None:
        with self._store().lock:
            self._store().activity_log_failures.extend(dict(f) for f in failures)

    @override
    def failures_of(self, company_sso_id: str, job_id: str) -> list[dict[str, Any]]:
        return [
            dict(f)
            for f in self._store().activity_log_failures
            if f["company_sso_id"] == company_sso_id and f["job_id"] == job_id
        ]


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
