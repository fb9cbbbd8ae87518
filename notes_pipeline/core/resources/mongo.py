"""CdpMongo: CDP's MongoDB (`contacts`, `contact_notes`, `crm_contact_id_map`), every query
scoped by company_sso_id."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError

from notes_pipeline.core.parsing import ascii_int
from notes_pipeline.core.resources.mongo_indexes import (
    drop_contact_notes_index,
    ensure_contact_notes_index,
    ensure_index,
    ensure_unique_index,
    max_bulk_write_ops,
)
from notes_pipeline.core.resources.mongo_writes import BulkUpsertResult, upsert_on_insert

CONTACTS = "contacts"
CONTACT_NOTES = "contact_notes"
CONTACT_ID_MAP = "crm_contact_id_map"  # SPEC-activity-logs §4.3 step 5
MIGRATED = {"legacy_crm_note_id": {"$exists": True}}
#: flag of an attachment placeholder (PRD S05 ERR-1: "Attachment unavailable"), and the
#: field holding the CRM asset id it stands for; the contact-notes family builds the entries
ATTACHMENT_UNAVAILABLE = "unavailable"
ATTACHMENT_ASSET_KEY = "legacy_crm_asset_id"

# SPEC-activity-logs §5, §6
ACTIVITY_LOGS = "activity_logs"
ACTIVITY_LOG_JOBS = "crm_activity_log_migration_jobs"
ACTIVITY_LOG_LOCKS = "crm_activity_log_migration_locks"
ACTIVITY_LOG_FAILURES = "crm_activity_log_migration_failures"
SOURCE_TAG = "crm_migration"
ACTIVITY_LOG_INDEX = "uq_activity_logs_company_external_id"
ACTIVITY_LOG_KEYS = [("company_sso_id", 1), ("external_id", 1)]
ACTIVITY_LOG_TAG_INDEX = "ix_activity_logs_company_source_tag"
ACTIVITY_LOG_TAG_KEYS = [("company_sso_id", 1), ("source_tag", 1)]
ACTIVE_JOB_INDEX = "uq_crm_activity_log_migration_jobs_active"
JOB_ID_INDEX = "uq_crm_activity_log_migration_jobs_job_id"
FAILURES_INDEX = "ix_crm_activity_log_migration_failures_company_job"
FAILURES_TTL_INDEX = "ttl_crm_activity_log_migration_failures_expire_at"

PRELOAD_BATCH = 10_000  # documents per getMore while preloading a company's contacts


def _map_person_id(key: Any) -> int | None:
    """A ``crm_contact_id_map.crm_person_id`` as an int: a number or a digit string."""
    return ascii_int(key)


class CdpMongo(dg.ConfigurableResource):
    """pymongo access to CDP; works against any MongoDB wire-protocol server."""

    uri: str = Field(description="MongoDB URI (secret: pass through EnvVar).")
    database: str = "cdp"
    bulk_write_concurrency: int = Field(
        default=4,
        ge=1,
        description=(
            "Bulk calls of one write batch in flight at once, where the server caps a call "
            "below the batch size (FerretDB 1.x: 40 operations); 1 = one call at a time."
        ),
    )

    _client: MongoClient | None = PrivateAttr(default=None)
    _max_bulk_ops: int | None = PrivateAttr(default=None)

    def _db(self):
        if self._client is None:
            self._client = MongoClient(self.uri, tz_aware=False, connect=False)
        return self._client[self.database]

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the client this step opened."""
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def notes(self):
        """The ``contact_notes`` collection."""
        return self._db()[CONTACT_NOTES]

    def ensure_indexes(self) -> str:
        """Create the idempotency index (up-step); returns how it was created."""
        return ensure_contact_notes_index(self.notes)

    def drop_indexes(self) -> None:
        """The documented down-step: drop the idempotency index; data untouched."""
        drop_contact_notes_index(self.notes)

    def contacts_by_crm_person_id(
        self, company_sso_id: str, crm_person_ids: Iterable[str]
    ) -> dict[str, str]:
        """One batched `$in` on `crm_data.id`, scoped to the company: crm id → contact _id."""
        ids = sorted(set(crm_person_ids))
        if not ids:
            return {}
        cursor = self._db()[CONTACTS].find(
            {"company_sso_id": company_sso_id, "crm_data.id": {"$in": ids}},
            {"_id": 1, "crm_data.id": 1},
        )
        return {doc["crm_data"]["id"]: str(doc["_id"]) for doc in cursor}

    def company_contacts_by_crm_person_id(
        self, company_sso_id: str, max_contacts: int
    ) -> dict[str, str] | None:
        """Every contact of the company that carries a ``crm_data.id``: crm id → contact _id,
        read as one streamed company-scoped query (served by the company's index; no `$in`,
        which FerretDB does not push down). Returns None, having read nothing but a count,
        when the company has more than ``max_contacts`` contacts (the caller then looks
        contacts up per batch). ``PyMongoError`` propagates."""
        scope = {"company_sso_id": company_sso_id}
        if self._db()[CONTACTS].count_documents(scope) > max_contacts:
            return None
        cursor = self._db()[CONTACTS].find(
            {**scope, "crm_data.id": {"$exists": True}}, {"_id": 1, "crm_data.id": 1}
        )
        found: dict[str, str] = {}
        for doc in cursor.batch_size(5000):
            crm_id = (doc.get("crm_data") or {}).get("id")
            if crm_id is not None:
                found.setdefault(crm_id, str(doc["_id"]))
        return found

    def contacts_by_source_id(
        self, company_sso_id: str, source_ids: Iterable[str]
    ) -> dict[str, list[Any]]:
        """SPEC-activity-logs §4.3 step 4 [N8]: one batched `$in` on `source_id`, scoped to the
        company: source_id → the `_id` of every contact carrying it (several = duplicates;
        the rule picks the smallest). Source ids without a contact are absent."""
        ids = sorted({str(i) for i in source_ids})
        if not ids:
            return {}
        found: dict[str, list[Any]] = {}
        cursor = self._db()[CONTACTS].find(
            {"company_sso_id": company_sso_id, "source_id": {"$in": ids}},
            {"_id": 1, "source_id": 1},
        )
        for doc in cursor:
            found.setdefault(str(doc["source_id"]), []).append(doc["_id"])
        return found

    def contact_id_map(self, company_sso_id: str, crm_person_ids: Iterable[int]) -> dict[int, Any]:
        """SPEC-activity-logs §4.3 step 5 [N8]: the `crm_contact_id_map` fallback, one batched
        `$in`, scoped to the company: crm_person_id → customer_id. The map may store the id
        as a number or as digits; both are matched. Persons without a row are absent."""
        ids = sorted({int(i) for i in crm_person_ids})
        if not ids:
            return {}
        cursor = self._db()[CONTACT_ID_MAP].find(
            {
                "company_sso_id": company_sso_id,
                "crm_person_id": {"$in": [*ids, *(str(i) for i in ids)]},
            },
            {"_id": 0, "crm_person_id": 1, "customer_id": 1},
        )
        found: dict[int, Any] = {}
        for doc in cursor:
            person_id = _map_person_id(doc.get("crm_person_id"))
            if person_id is not None and doc.get("customer_id") is not None:
                found.setdefault(person_id, doc["customer_id"])
        return found

    def company_contact_source_ids(
        self, company_sso_id: str, max_contacts: int
    ) -> dict[str, list[Any]] | None:
        """SPEC-activity-logs §4.3 step 4 [N8], preloaded: the company's contacts in one
        streamed, company-scoped query (``_id`` and ``source_id`` only): source_id → the
        ``_id`` of every contact carrying it — what ``contacts_by_source_id`` returns for
        those ids (only string ``source_id`` values, as its string ``$in`` matches). None,
        after reading at most ``max_contacts + 1`` documents, when the company has more than
        ``max_contacts`` contacts (the caller then uses the batched ``$in``)."""
        found: dict[str, list[Any]] = {}
        cursor = self._db()[CONTACTS].find(
            {"company_sso_id": company_sso_id},
            {"_id": 1, "source_id": 1},
            limit=max_contacts + 1,
            batch_size=PRELOAD_BATCH,
        )
        for read, doc in enumerate(cursor, start=1):
            if read > max_contacts:
                cursor.close()
                return None
            source_id = doc.get("source_id")
            if isinstance(source_id, str):
                found.setdefault(source_id, []).append(doc["_id"])
        return found

    def company_contact_id_map(self, company_sso_id: str, max_rows: int) -> dict[int, Any] | None:
        """SPEC-activity-logs §4.3 step 5 [N8], preloaded: the company's
        ``crm_contact_id_map`` rows in one streamed, company-scoped query: crm_person_id →
        customer_id, read as ``contact_id_map`` reads them (number or digits; the first row
        of a person wins). None, after reading at most ``max_rows + 1`` rows, when the
        company has more than ``max_rows``."""
        cursor = self._db()[CONTACT_ID_MAP].find(
            {"company_sso_id": company_sso_id},
            {"_id": 0, "crm_person_id": 1, "customer_id": 1},
            limit=max_rows + 1,
            batch_size=PRELOAD_BATCH,
        )
        found: dict[int, Any] = {}
        for read, doc in enumerate(cursor, start=1):
            if read > max_rows:
                cursor.close()
                return None
            person_id = _map_person_id(doc.get("crm_person_id"))
            if person_id is not None and doc.get("customer_id") is not None:
                found.setdefault(person_id, doc["customer_id"])
        return found

    def upsert_notes(
        self,
        company_sso_id: str,
        documents: Sequence[dict[str, Any]],
        *,
        recheck_matched: bool = False,
    ) -> BulkUpsertResult:
        """`$setOnInsert` upserts keyed by (company_sso_id, legacy_crm_note_id), unordered;
        per-row outcomes from the bulk reply (``mongo_writes.upsert_on_insert``, which also
        says what ``recheck_matched`` does on a retry)."""
        return upsert_on_insert(
            self.notes,
            {"company_sso_id": company_sso_id},
            "legacy_crm_note_id",
            documents,
            self._max_ops(),
            self.bulk_write_concurrency,
            recheck_matched=recheck_matched,
        )

    def _max_ops(self) -> int:
        if self._max_bulk_ops is None:
            self._max_bulk_ops = max_bulk_write_ops(self.notes)
        return self._max_bulk_ops

    def count_migrated(self, company_sso_id: str) -> int:
        """Notes of the company that carry a legacy id (the validation's target count)."""
        return self.notes.count_documents({"company_sso_id": company_sso_id, **MIGRATED})

    def iter_migrated(self, company_sso_id: str) -> Iterator[dict[str, Any]]:
        """The company's migrated notes, as stored, streamed once (one company-scoped query,
        no `$in`; memory: one cursor batch). ``PyMongoError`` propagates."""
        query: dict[str, Any] = {"company_sso_id": company_sso_id, **MIGRATED}
        yield from self.notes.find(query, {"_id": 0}).batch_size(1000)

    def notes_with_unavailable_attachments(self, company_sso_id: str) -> dict[str, list[Any]]:
        """Migrated notes of the company holding at least one attachment placeholder
        (``attachments.<n>.unavailable: true``): legacy id → the stored ``attachments``.

        One query per call, scoped by ``company_sso_id`` (on MongoDB it walks the company's
        part of the unique index), so a loader calls it once per CID, never per batch.
        """
        cursor = self.notes.find(
            {
                "company_sso_id": company_sso_id,
                **MIGRATED,
                f"attachments.{ATTACHMENT_UNAVAILABLE}": True,
            },
            {"_id": 0, "legacy_crm_note_id": 1, "attachments": 1},
        )
        return {
            str(doc["legacy_crm_note_id"]): list(doc.get("attachments") or []) for doc in cursor
        }

    def replace_attachment_placeholders(
        self,
        company_sso_id: str,
        legacy_crm_note_id: str,
        replacements: Sequence[tuple[int, str, Mapping[str, Any]]],
    ) -> bool:
        """Replace placeholders of one migrated note in place: each ``(position, asset key,
        entry)`` sets ``attachments.<position>`` to ``entry``, and only while that element is
        still the placeholder of that asset (guards in the filter). One ``update_one``, so
        either every replacement applies or none; no other field or element is touched.

        Returns True when the note matched (applied), False when any guard no longer holds
        (nothing written). Standard MongoDB (array positions in dot notation; FerretDB 1.24
        has neither ``arrayFilters`` nor ``$elemMatch`` of fields). ``PyMongoError`` propagates.
        """
        if not replacements:
            return True
        query: dict[str, Any] = {
            "company_sso_id": company_sso_id,
            "legacy_crm_note_id": legacy_crm_note_id,
        }
        update: dict[str, Any] = {}
        for position, asset_key, entry in replacements:
            query[f"attachments.{position}.{ATTACHMENT_ASSET_KEY}"] = asset_key
            query[f"attachments.{position}.{ATTACHMENT_UNAVAILABLE}"] = True
            update[f"attachments.{position}"] = dict(entry)
        return self.notes.update_one(query, {"$set": update}).matched_count == 1

    def duplicate_legacy_ids(self, company_sso_id: str) -> list[str]:
        """Legacy ids stored more than once for the company (should be none), sorted."""
        pipeline = [
            {"$match": {"company_sso_id": company_sso_id, **MIGRATED}},
            {"$group": {"_id": "$legacy_crm_note_id", "n": {"$sum": 1}}},
            {"$match": {"n": {"$gt": 1}}},
        ]
        return sorted(str(doc["_id"]) for doc in self.notes.aggregate(pipeline))

    def delete_migrated(self, company_sso_id: str) -> int:
        """Rollback: remove only this company's migrated notes (native notes stay)."""
        return self.notes.delete_many({"company_sso_id": company_sso_id, **MIGRATED}).deleted_count

    # --- activity logs (SPEC-activity-logs §5-§8) -------------------------------------------

    def collection(self, name: str):
        """A collection of the CDP database by name."""
        return self._db()[name]

    def ensure_activity_log_indexes(self) -> dict[str, str]:
        """Create the activity-log indexes (§5, §6), idempotently; returns name → variant.

        ``uq_activity_logs_company_external_id`` is partial on ``external_id`` where the
        server allows it (plain unique on FerretDB 1.x); the one-active-job index on the jobs
        collection is created only where partial indexes exist — everywhere the lock document
        (``acquire_job_lock``) is what enforces it.
        """
        logs = self.collection(ACTIVITY_LOGS)
        jobs = self.collection(ACTIVITY_LOG_JOBS)
        failures = self.collection(ACTIVITY_LOG_FAILURES)
        modes = {
            ACTIVITY_LOG_INDEX: ensure_unique_index(
                logs, ACTIVITY_LOG_INDEX, ACTIVITY_LOG_KEYS, {"external_id": {"$exists": True}}
            ),
            ACTIVITY_LOG_TAG_INDEX: ensure_index(
                logs, ACTIVITY_LOG_TAG_INDEX, ACTIVITY_LOG_TAG_KEYS
            ),
            JOB_ID_INDEX: ensure_unique_index(jobs, JOB_ID_INDEX, [("job_id", 1)], None),
            FAILURES_INDEX: ensure_index(
                failures, FAILURES_INDEX, [("company_sso_id", 1), ("job_id", 1)]
            ),
        }
        if modes[ACTIVITY_LOG_INDEX] == "partial":
            modes[ACTIVE_JOB_INDEX] = ensure_unique_index(
                jobs, ACTIVE_JOB_INDEX, [("company_sso_id", 1)], {"status": "in_progress"}
            )
        try:
            failures.create_index([("expire_at", 1)], name=FAILURES_TTL_INDEX, expireAfterSeconds=0)
            modes[FAILURES_TTL_INDEX] = "ttl"
        except PyMongoError:  # a server without TTL indexes: the retention is documented only
            modes[FAILURES_TTL_INDEX] = "none"
        return modes

    def upsert_activity_logs(
        self,
        company_sso_id: str,
        documents: Sequence[dict[str, Any]],
        *,
        recheck_matched: bool = False,
    ) -> BulkUpsertResult:
        """§5 writes: `$setOnInsert` upserts keyed by (company_sso_id, external_id)
        (``mongo_writes.upsert_on_insert``)."""
        return upsert_on_insert(
            self.collection(ACTIVITY_LOGS),
            {"company_sso_id": company_sso_id},
            "external_id",
            documents,
            self._max_ops(),
            self.bulk_write_concurrency,
            recheck_matched=recheck_matched,
        )

    def count_activity_logs(self, company_sso_id: str) -> int:
        """§7 accuracy: ``countDocuments({source_tag: 'crm_migration', company_sso_id})``."""
        return self.collection(ACTIVITY_LOGS).count_documents(
            {"company_sso_id": company_sso_id, "source_tag": SOURCE_TAG}
        )

    def iter_activity_logs(self, company_sso_id: str) -> Iterable[dict[str, Any]]:
        """The company's migrated activity logs as stored, streamed (one scoped query)."""
        return self.collection(ACTIVITY_LOGS).find(
            {"company_sso_id": company_sso_id, "source_tag": SOURCE_TAG}, batch_size=2000
        )

    def delete_activity_logs(self, company_sso_id: str) -> int:
        """§8 rollback, the only delete: this company's ``source_tag = crm_migration``
        documents; native documents and other companies' never match. Returns the count."""
        return (
            self.collection(ACTIVITY_LOGS)
            .delete_many({"company_sso_id": company_sso_id, "source_tag": SOURCE_TAG})
            .deleted_count
        )

    def insert_job(self, job: dict[str, Any]) -> None:
        """Insert a job document (§6); ``DuplicateKeyError`` when its job_id exists or, on
        servers with the partial index, another job of the company is in progress."""
        self.collection(ACTIVITY_LOG_JOBS).insert_one({"_id": job["job_id"], **job})

    def update_job(self, job_id: str, fields: dict[str, Any]) -> None:
        """``$set`` ``fields`` on the job document ``job_id``."""
        self.collection(ACTIVITY_LOG_JOBS).update_one({"_id": job_id}, {"$set": fields})

    def find_job(self, job_id: str) -> dict[str, Any] | None:
        """The job document ``job_id``, or None."""
        return self.collection(ACTIVITY_LOG_JOBS).find_one({"_id": job_id})

    def jobs_of(self, company_sso_id: str) -> list[dict[str, Any]]:
        """Every job document of the company, newest ``started_at`` first."""
        jobs = list(self.collection(ACTIVITY_LOG_JOBS).find({"company_sso_id": company_sso_id}))
        return sorted(jobs, key=lambda j: str(j.get("started_at") or ""), reverse=True)

    def acquire_job_lock(self, company_sso_id: str, job_id: str) -> dict[str, Any] | None:
        """Take the company's lock document (``_id = company_sso_id``, §15) for ``job_id``.

        Returns None when taken, else the lock document that holds it (another job).
        """
        locks = self.collection(ACTIVITY_LOG_LOCKS)
        try:
            locks.insert_one({"_id": company_sso_id, "job_id": job_id})
            return None
        except DuplicateKeyError:
            held = locks.find_one({"_id": company_sso_id})
            if held is None:  # released in between: try once more
                return self.acquire_job_lock(company_sso_id, job_id)
            return held if held.get("job_id") != job_id else None

    def take_over_job_lock(self, company_sso_id: str, stale_job_id: str, job_id: str) -> bool:
        """Move the lock from ``stale_job_id`` to ``job_id`` atomically; False when another
        job took it first."""
        done = self.collection(ACTIVITY_LOG_LOCKS).update_one(
            {"_id": company_sso_id, "job_id": stale_job_id}, {"$set": {"job_id": job_id}}
        )
        return done.matched_count == 1

    def release_job_lock(self, company_sso_id: str, job_id: str) -> None:
        """Release the company's lock if ``job_id`` holds it (idempotent)."""
        self.collection(ACTIVITY_LOG_LOCKS).delete_one({"_id": company_sso_id, "job_id": job_id})

    def job_lock(self, company_sso_id: str) -> dict[str, Any] | None:
        """The company's lock document, or None when no job holds it."""
        return self.collection(ACTIVITY_LOG_LOCKS).find_one({"_id": company_sso_id})

    def record_failures(self, failures: Sequence[dict[str, Any]]) -> None:
        """Keep final failures (ids and codes only) in the failed-record store (§6)."""
        if failures:
            self.collection(ACTIVITY_LOG_FAILURES).insert_many([dict(f) for f in failures])

    def failures_of(self, company_sso_id: str, job_id: str) -> list[dict[str, Any]]:
        """The failed-record store's rows of one job."""
        return list(
            self.collection(ACTIVITY_LOG_FAILURES).find(
                {"company_sso_id": company_sso_id, "job_id": job_id}, {"_id": 0}
            )
        )


__all__ = ["SOURCE_TAG", "BulkUpsertResult", "CdpMongo", "DuplicateKeyError", "PyMongoError"]
