"""CdpMongo: CDP's MongoDB (`contacts`, `contact_notes`), every query scoped by company_sso_id."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr
from pymongo import MongoClient, UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError

from notes_pipeline.resources.mongo_indexes import (
    drop_contact_notes_index,
    ensure_contact_notes_index,
)

CONTACTS = "contacts"
CONTACT_NOTES = "contact_notes"
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

    def _db(self):
        if self._client is None:
            self._client = MongoClient(self.uri, tz_aware=False, connect=False)
        return self._client[self.database]

    @property
    def notes(self):
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

    def upsert_notes(
        self, company_sso_id: str, documents: Sequence[dict[str, Any]]
    ) -> BulkUpsertResult:
        """`$setOnInsert` upserts keyed by (company_sso_id, legacy_crm_note_id), unordered."""
        for doc in documents:
            if doc["company_sso_id"] != company_sso_id:
                raise ValueError("document outside the company scope")
        requests = [
            UpdateOne(
                {"company_sso_id": company_sso_id, "legacy_crm_note_id": doc["legacy_crm_note_id"]},
                {"$setOnInsert": doc},
                upsert=True,
            )
            for doc in documents
        ]
        result = BulkUpsertResult()
        try:
            outcome = self.notes.bulk_write(requests, ordered=False)
            details_upserted = set(outcome.upserted_ids or {})
            errors: dict[int, str] = {}
        except BulkWriteError as exc:
            details_upserted = {item["index"] for item in exc.details.get("upserted", [])}
            errors = {
                err["index"]: f"code={err.get('code')}"
                for err in exc.details.get("writeErrors", [])
            }
        result.upserted = details_upserted
        result.errors = errors
        result.matched = set(range(len(documents))) - details_upserted - set(errors)
        return result

    def count_migrated(self, company_sso_id: str) -> int:
        return self.notes.count_documents({"company_sso_id": company_sso_id, **MIGRATED})

    def find_migrated(
        self, company_sso_id: str, legacy_ids: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"company_sso_id": company_sso_id, **MIGRATED}
        if legacy_ids is not None:
            query["legacy_crm_note_id"] = {"$in": list(legacy_ids)}
        return list(self.notes.find(query))

    def duplicate_legacy_ids(self, company_sso_id: str) -> list[str]:
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
