"""Indexes the migration relies on, created idempotently on MongoDB or FerretDB.

``uq_contact_notes_company_legacy_crm_note_id`` on ``contact_notes``
``{company_sso_id: 1, legacy_crm_note_id: 1}``, unique:

* MongoDB: with ``partialFilterExpression: {legacy_crm_note_id: {$exists: true}}`` so that
  native CDP notes (no ``legacy_crm_note_id``) never collide with each other.
* FerretDB 1.x: ``partialFilterExpression`` is rejected (``NotImplemented``, code 238,
  FerretDB issue #2448), so a plain unique index is created instead. FerretDB 1.x stores
  a missing field as SQL NULL in the index and NULLs never conflict, so native notes still
  don't collide there (proved by ``notes_pipeline_tests/test_mongo_features.py``; see
  docs/MONGODB.md).

The down-step is :func:`drop_contact_notes_index` (data is untouched).
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import OperationFailure

log = logging.getLogger(__name__)

CONTACT_NOTES_INDEX_NAME = "uq_contact_notes_company_legacy_crm_note_id"
CONTACT_NOTES_INDEX_KEYS = [("company_sso_id", 1), ("legacy_crm_note_id", 1)]
CONTACT_NOTES_PARTIAL_FILTER = {"legacy_crm_note_id": {"$exists": True}}

CONTACTS_INDEX_NAME = "ix_contacts_company_crm_data_id"
CONTACTS_INDEX_KEYS = [("company_sso_id", 1), ("crm_data.id", 1)]

#: ensure_contact_notes_index() return values
VARIANT_PARTIAL = "partial"  # unique + partialFilterExpression (MongoDB)
VARIANT_PLAIN = "plain"  # plain unique (FerretDB 1.x: missing fields never collide)

_NOT_IMPLEMENTED = 238  # FerretDB's answer to partialFilterExpression


def server_info(collection: Collection) -> dict[str, Any]:
    """``buildInfo`` of the server behind ``collection``."""
    return collection.database.client.admin.command("buildInfo")


def is_ferretdb(collection: Collection) -> bool:
    """True when the server is FerretDB (its buildInfo carries ``ferretdbVersion``)."""
    return "ferretdbVersion" in server_info(collection)


def _key_of(index: dict[str, Any]) -> list[tuple[str, int]]:
    return [(k, int(v)) for k, v in index["key"].items()]


def _existing(collection: Collection, keys: list[tuple[str, int]]) -> dict[str, Any] | None:
    for index in collection.list_indexes():
        if _key_of(index) == keys:
            return dict(index)
    return None


def _variant_of(index: dict[str, Any]) -> str:
    return VARIANT_PARTIAL if index.get("partialFilterExpression") else VARIANT_PLAIN


def ensure_contact_notes_index(collection: Collection) -> str:
    """Create the idempotency index on ``contact_notes`` unless it exists; idempotent.

    Returns the variant in place: ``"partial"`` (unique + partialFilterExpression) or
    ``"plain"`` (plain unique; FerretDB only).
    """
    return ensure_unique_index(
        collection, CONTACT_NOTES_INDEX_NAME, CONTACT_NOTES_INDEX_KEYS, CONTACT_NOTES_PARTIAL_FILTER
    )


def ensure_unique_index(
    collection: Collection,
    name: str,
    keys: list[tuple[str, int]],
    partial_filter: dict[str, Any] | None,
) -> str:
    """Create a unique index on ``keys`` (partial on ``partial_filter``) unless one exists.

    Returns ``"partial"`` or ``"plain"``. FerretDB 1.x rejects ``partialFilterExpression``;
    there (only) a plain unique index is created, where a missing key field is SQL NULL and
    never collides. Raises ``RuntimeError`` when a NON-unique index holds the same keys, and
    any other ``OperationFailure`` (on MongoDB a plain index would make native documents
    collide, so there is no fallback).
    """
    existing = _existing(collection, keys)
    if existing is not None:
        if not existing.get("unique"):
            raise RuntimeError(
                f"{collection.full_name} has a NON-unique index {existing['name']!r} on "
                f"{keys}; drop it before migrating"
            )
        variant = _variant_of(existing)
        log.info("index %s already present (%s)", existing["name"], variant)
        return variant
    if partial_filter is None:
        collection.create_index(keys, name=name, unique=True)
        return VARIANT_PLAIN
    ferret = is_ferretdb(collection)
    try:
        collection.create_index(
            keys, name=name, unique=True, partialFilterExpression=partial_filter
        )
        log.info("created %s on %s with partialFilterExpression", name, collection.full_name)
        return VARIANT_PARTIAL
    except OperationFailure as exc:
        if not (ferret and exc.code == _NOT_IMPLEMENTED):
            raise
        log.info("FerretDB rejected partialFilterExpression (%s)", exc.details.get("errmsg"))
    collection.create_index(keys, name=name, unique=True)
    log.info("created %s on %s as a plain unique index (FerretDB)", name, collection.full_name)
    return VARIANT_PLAIN


def ensure_index(collection: Collection, name: str, keys: list[tuple[str, int]]) -> str:
    """A plain (non-unique) index on ``keys`` unless one with those keys exists; its name."""
    existing = _existing(collection, keys)
    if existing is not None:
        return existing["name"]
    return collection.create_index(keys, name=name)


#: Max UpdateOne ops per bulk_write call on FerretDB 1.x. Its update handler keeps one
#: backend connection per op of a command open until the command ends, so a command with
#: more ops than its connection pool (PostgreSQL backend: pool_max_conns, 200 on the local
#: stack, 50 by default; SQLite backend: 100, fixed) deadlocks and wedges the server until
#: restart. 40 leaves room for a few concurrent writers. MongoDB has no such limit.
FERRETDB_MAX_BULK_WRITE_OPS = 40
MONGODB_MAX_BULK_WRITE_OPS = 1000


def max_bulk_write_ops(collection: Collection) -> int:
    """How many ops one ``bulk_write`` call may carry on this server (split larger batches)."""
    return FERRETDB_MAX_BULK_WRITE_OPS if is_ferretdb(collection) else MONGODB_MAX_BULK_WRITE_OPS


def drop_contact_notes_index(collection: Collection) -> bool:
    """Down-step: drop the idempotency index (documents untouched). Idempotent.

    Returns True if an index was dropped.
    """
    names = {index["name"] for index in collection.list_indexes()}
    if CONTACT_NOTES_INDEX_NAME not in names:
        log.info("%s not present on %s", CONTACT_NOTES_INDEX_NAME, collection.full_name)
        return False
    collection.drop_index(CONTACT_NOTES_INDEX_NAME)
    log.info("dropped %s on %s", CONTACT_NOTES_INDEX_NAME, collection.full_name)
    return True


def ensure_contacts_index(collection: Collection) -> str:
    """Index ``contacts`` on ``(company_sso_id, crm_data.id)`` for the contact lookup.

    Idempotent; an existing index with the same keys (any name) is reused. Returns its name.
    """
    return ensure_index(collection, CONTACTS_INDEX_NAME, CONTACTS_INDEX_KEYS)
