"""CdpMongo: CDP's MongoDB (`contacts`, `contact_notes`, `crm_contact_id_map`), every query
scoped by company_sso_id."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from notes_pipeline.core.resources.mongo_indexes import (
    drop_contact_notes_index,
    ensure_contact_notes_index,
    max_bulk_write_ops,
)
from notes_pipeline.core.resources.mongo_writes import BulkUpsertResult, upsert_on_insert

CONTACTS = "contacts"
CONTACT_NOTES = "contact_notes"
CONTACT_ID_MAP = "crm_contact_id_map"  # SPEC-activity-logs §4.3 step 5
MIGRATED = {"legacy_crm_note_id": {"$exists": True}}
PRELOAD_BATCH = 10_000  # documents per getMore while preloading a company's contacts


def _map_person_id(key: Any) -> int | None:
    """A ``crm_contact_id_map.crm_person_id`` as an int: a number or a digit string."""
    return int(key) if isinstance(key, int | str) and str(key).isdigit() else None


class CdpMongo(dg.ConfigurableResource):
    """pymongo access to CDP; works against any MongoDB wire-protocol server."""

    uri: str = Field(description="MongoDB URI (secret: pass through EnvVar).")
    database: str = "cdp"

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
        self, company_sso_id: str, documents: Sequence[dict[str, Any]]
    ) -> BulkUpsertResult:
        """`$setOnInsert` upserts keyed by (company_sso_id, legacy_crm_note_id), unordered;
        per-row outcomes from the bulk reply (``mongo_writes.upsert_on_insert``)."""
        return upsert_on_insert(
            self.notes,
            {"company_sso_id": company_sso_id},
            "legacy_crm_note_id",
            documents,
            self._max_ops(),
        )

    def _max_ops(self) -> int:
        if self._max_bulk_ops is None:
            self._max_bulk_ops = max_bulk_write_ops(self.notes)
        return self._max_bulk_ops

    def count_migrated(self, company_sso_id: str) -> int:
        """Notes of the company that carry a legacy id (the validation's target count)."""
        return self.notes.count_documents({"company_sso_id": company_sso_id, **MIGRATED})

    def find_migrated(
        self, company_sso_id: str, legacy_ids: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """The company's migrated notes (only ``legacy_ids`` when given), as stored."""
        query: dict[str, Any] = {"company_sso_id": company_sso_id, **MIGRATED}
        if legacy_ids is not None:
            query["legacy_crm_note_id"] = {"$in": list(legacy_ids)}
        return list(self.notes.find(query))

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


__all__ = ["BulkUpsertResult", "CdpMongo", "PyMongoError"]
