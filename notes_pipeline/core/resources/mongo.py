"""CdpMongo: CDP's MongoDB (`contacts`, `contact_notes`, `crm_contact_id_map`), every query
scoped by company_sso_id."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from bson import ObjectId
from pydantic import Field, PrivateAttr
from pymongo import MongoClient, UpdateOne
from pymongo.errors import BulkWriteError, ConnectionFailure, ExecutionTimeout, PyMongoError

from notes_pipeline.core.resources.mongo_indexes import (
    drop_contact_notes_index,
    ensure_contact_notes_index,
    max_bulk_write_ops,
)

CONTACTS = "contacts"
CONTACT_NOTES = "contact_notes"
CONTACT_ID_MAP = "crm_contact_id_map"  # SPEC-activity-logs §4.3 step 5
MIGRATED = {"legacy_crm_note_id": {"$exists": True}}


@dataclass
class BulkUpsertResult:
    """Per-row result of one bulk upsert: indexes into the submitted batch."""

    upserted: set[int] = field(default_factory=set)
    matched: set[int] = field(default_factory=set)
    errors: dict[int, str] = field(default_factory=dict)


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
            key = doc.get("crm_person_id")
            person_id = int(key) if isinstance(key, int | str) and str(key).isdigit() else None
            if person_id is not None and doc.get("customer_id") is not None:
                found.setdefault(person_id, doc["customer_id"])
        return found

    def upsert_notes(
        self, company_sso_id: str, documents: Sequence[dict[str, Any]]
    ) -> BulkUpsertResult:
        """`$setOnInsert` upserts keyed by (company_sso_id, legacy_crm_note_id), unordered.

        Per-row outcomes come from what exists before and after the write (one indexed `$in`
        each), not from the server's reply details, which some wire-compatible servers leave
        incomplete when a row fails. Each row is inserted with an ``_id`` chosen here, so a
        row counts as upserted only when the stored note carries that ``_id``: a note another
        writer inserted between the two reads (two loads of one CID at once, or a killed run's
        last write landing late) is matched, never counted twice. Connection errors propagate
        so the caller can retry.
        """
        for doc in documents:
            if doc["company_sso_id"] != company_sso_id:
                raise ValueError("document outside the company scope")
        keys = [doc["legacy_crm_note_id"] for doc in documents]
        ids = [doc.get("_id") or ObjectId() for doc in documents]
        before = self._existing(company_sso_id, keys)
        requests = [
            UpdateOne(
                {"company_sso_id": company_sso_id, "legacy_crm_note_id": key},
                {"$setOnInsert": {**doc, "_id": _id}},
                upsert=True,
            )
            for key, doc, _id in zip(keys, documents, ids, strict=True)
        ]
        codes: dict[int, str] = {}
        chunk = self._max_ops()
        for start in range(0, len(requests), chunk):
            part = requests[start : start + chunk]
            try:
                self.notes.bulk_write(part, ordered=False)
            except BulkWriteError as exc:
                for err in exc.details.get("writeErrors", []):
                    codes[start + err["index"]] = f"code={err.get('code')}"
            except (ConnectionFailure, ExecutionTimeout):
                raise
            except (PyMongoError, KeyError, TypeError) as exc:  # incomplete server reply
                codes.update({start + i: type(exc).__name__ for i in range(len(part))})
        after = self._existing(company_sso_id, keys)
        result = BulkUpsertResult()
        for index, (key, _id) in enumerate(zip(keys, ids, strict=True)):
            if key in before:
                result.matched.add(index)
            elif key not in after:
                result.errors[index] = codes.get(index, "write error")
            elif after[key] == _id:
                result.upserted.add(index)
            else:  # inserted by another writer after our first read
                result.matched.add(index)
        return result

    def _max_ops(self) -> int:
        if self._max_bulk_ops is None:
            self._max_bulk_ops = max_bulk_write_ops(self.notes)
        return self._max_bulk_ops

    def _existing(self, company_sso_id: str, keys: Sequence[str]) -> dict[str, Any]:
        """legacy_crm_note_id → stored ``_id`` of the company's notes among ``keys``."""
        cursor = self.notes.find(
            {"company_sso_id": company_sso_id, "legacy_crm_note_id": {"$in": list(keys)}},
            {"legacy_crm_note_id": 1, "_id": 1},
        )
        return {doc["legacy_crm_note_id"]: doc["_id"] for doc in cursor}

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
