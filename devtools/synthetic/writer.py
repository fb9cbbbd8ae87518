"""Write a synthetic Dataset to the stack: CRM PostgreSQL, identity table, CDP contacts, S3.

``seed`` replaces the previous synthetic data: the rows of every synthetic CID
(every profile) and their ``sso_users`` are deleted and reloaded with COPY, one
transaction per database (``truncate=True`` empties the tables instead); the
activity-log tables (``audits_schema.sql``, applied after ``crm_schema.sql``) likewise,
audits by their synthetic id range; CDP contacts and ``crm_contact_id_map`` rows of the
old and new synthetic tenants are deleted and reinserted; the CRM bucket's ``orgs/``
prefix is made to hold exactly the dataset's objects.
Seeding twice leaves the same state.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from devtools.synthetic.audits import (
    AUDIT_COLUMNS,
    AUDIT_ID_BASE,
    AUDIT_ID_END,
    AUDIT_TABLES,
)
from devtools.synthetic.dataset import (
    TABLES,
    Dataset,
    StoredObject,
    decoy_company_sso_id,
    synthetic_cids,
)

OBJECT_PREFIX = "orgs/"
LOCK_NAME = "devtools.synthetic.seed"
CONTACT_INDEX = "crm_contact_index"
CONTACT_INDEX_KEYS = [("company_sso_id", 1), ("crm_data.id", 1)]
COLUMNS = {
    "organizations": ("id", "name", "company_sso_id"),
    "users": ("id", "organization_id", "full_name", "email", "deleted_at"),
    "crm_people": ("id", "organization_id", "full_name", "email", "phone"),
    "crm_companies": ("id", "organization_id", "name"),
    "crm_deals": ("id", "organization_id", "name"),
    "crm_tickets": ("id", "organization_id", "name"),
    "crm_note_types": ("id", "name"),
    "crm_notes": (
        "id",
        "organization_id",
        "type",
        "crm_person_id",
        "crm_company_id",
        "crm_deal_id",
        "crm_ticket_id",
        "crm_note_type_id",
        "note",
        "creator_id",
        "created_at",
        "updated_at",
    ),
    "assets": (
        "id",
        "assetable_type",
        "assetable_id",
        "kind",
        "file_url",
        "file_name",
        "content_type",
        "file_size",
    ),
    "crm_note_attachments": (
        "id",
        "crm_note_id",
        "file_url",
        "file_name",
        "content_type",
        "file_size",
    ),
    "crm_checkins": ("id", "crm_note_id", "latitude", "longitude", "address", "checked_in_at"),
}
SSO_COLUMNS = ("company_sso_id", "email", "sso_id")
AUDIT_TABLE_COLUMNS = {
    "crm_tasks": ("id", "organization_id", "name"),
    "crm_deal_people": ("id", "organization_id", "crm_deal_id", "crm_person_id"),
    "crm_task_people": ("id", "organization_id", "crm_task_id", "crm_person_id"),
    "crm_ticket_people": ("id", "organization_id", "crm_ticket_id", "crm_person_id"),
    "audits": AUDIT_COLUMNS,
}
COLUMNS.update(AUDIT_TABLE_COLUMNS)
CONTACT_ID_MAP = "crm_contact_id_map"
SOURCE_ID_INDEX = "ix_contacts_company_source_id"  # SPEC-activity-logs §5 (RFC §2.3)
SOURCE_ID_INDEX_KEYS = [("company_sso_id", 1), ("source_id", 1)]
ID_MAP_INDEX = "uq_crm_contact_id_map_company_person"
ID_MAP_INDEX_KEYS = [("company_sso_id", 1), ("crm_person_id", 1)]
COPY_CHUNK = 100_000  # rows per COPY statement for streamed tables


@dataclass(frozen=True)
class Targets:
    """Where ``seed`` writes; ``from_env`` reads the NOTES_PIPELINE_* variables."""

    crm_dsn: str
    identity_dsn: str
    mongo_uri: str
    mongo_db: str
    bucket: str
    s3_endpoint_url: str | None
    attachment_base_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Targets:
        """Targets from NOTES_PIPELINE_* environment variables."""
        crm_dsn = env["NOTES_PIPELINE_CRM_ADMIN_DSN"]
        endpoint = env.get("NOTES_PIPELINE_S3_ENDPOINT_URL") or None
        bucket = env["NOTES_PIPELINE_CRM_BUCKET"]
        base_url = env.get("NOTES_PIPELINE_CRM_ATTACHMENT_BASE_URL") or f"{endpoint}/{bucket}"
        return cls(
            crm_dsn=crm_dsn,
            identity_dsn=env.get("NOTES_PIPELINE_IDENTITY_DSN") or crm_dsn,
            mongo_uri=env["NOTES_PIPELINE_MONGO_URI"],
            mongo_db=env.get("NOTES_PIPELINE_MONGO_DB") or "cdp",
            bucket=bucket,
            s3_endpoint_url=endpoint,
            attachment_base_url=base_url,
        )


def file_url(base_url: str, key: str) -> str:
    """The CRM file_url of an object key."""
    return f"{base_url.rstrip('/')}/{key}"


def schema_sql(name: str, package: str = "notes_pipeline") -> str:
    """Text of a packaged .sql file (``crm_schema.sql``, ``identity_schema.sql``; with
    ``package="notes_pipeline.activity_logs"``: ``audits_schema.sql``)."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def audits_schema_sql() -> str:
    """The activity-log tables (applied after ``crm_schema.sql``)."""
    return schema_sql("audits_schema.sql", "notes_pipeline.activity_logs")


# --- PostgreSQL ---------------------------------------------------------------


def _csv_value(value) -> str:
    """One field for COPY ... (FORMAT csv, NULL '\\N'): quoted text, bare numbers, \\N."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        value = value.isoformat()
    if isinstance(value, str):
        return '"' + value.replace('"', '""') + '"'
    return str(value)


def _copy(cursor, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
    """Bulk-load rows with COPY FROM STDIN."""
    buffer = io.StringIO()
    for row in rows:
        buffer.write(",".join(_csv_value(v) for v in row))
        buffer.write("\n")
    buffer.seek(0)
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
    cursor.copy_expert(sql, buffer)


def _copy_chunks(cursor, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
    """COPY a stream of rows in chunks of ``COPY_CHUNK`` (bounded memory for perf, large)."""
    chunk: list[tuple] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= COPY_CHUNK:
            _copy(cursor, table, columns, chunk)
            chunk = []
    if chunk:
        _copy(cursor, table, columns, chunk)


def _utc_naive(value):
    """An aware datetime as naive UTC (what the gem stores in ``timestamp``); else as is."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def crm_rows(dataset: Dataset, table: str, base_url: str) -> Iterator[tuple]:
    """Rows of a CRM table as tuples in COLUMNS order (file_url composed from key; audits'
    aware created_at stored as UTC, as Rails writes it)."""
    columns = COLUMNS[table]
    for row in dataset.table(table):
        if "key" in row:
            row = {**row, "file_url": file_url(base_url, row["key"])}
        if table == "audits":
            row = {**row, "created_at": _utc_naive(row["created_at"])}
        yield tuple(row[c] for c in columns)


def write_crm(conn, dataset: Dataset, base_url: str, truncate: bool = False) -> list[str]:
    """Create the CRM schema and replace the synthetic CIDs' rows; return their old company ids.

    Only synthetic CIDs (of any profile) are deleted, so hand-built test orgs sharing the
    database survive; ``truncate=True`` empties every CRM table instead.
    """
    with conn, conn.cursor() as cursor:
        cursor.execute(schema_sql("crm_schema.sql"))
        cursor.execute(audits_schema_sql())
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOCK_NAME,))
        cids = sorted(synthetic_cids() | {o["id"] for o in dataset.organizations})
        cursor.execute("SELECT company_sso_id FROM organizations WHERE id = ANY(%s)", (cids,))
        previous = [r[0] for r in cursor.fetchall()]
        if truncate:
            cursor.execute(f"TRUNCATE {', '.join((*reversed(AUDIT_TABLES), *reversed(TABLES)))}")
        else:
            _delete_cids(cursor, cids)
        _upsert_note_types(cursor, dataset)
        for table in TABLES:
            if table != "crm_note_types":
                _copy_chunks(cursor, table, COLUMNS[table], crm_rows(dataset, table, base_url))
        for table in AUDIT_TABLES:
            _copy_chunks(cursor, table, COLUMNS[table], crm_rows(dataset, table, base_url))
        if dataset.audit_stream is not None:
            _copy_chunks(cursor, "audits", AUDIT_COLUMNS, dataset.audit_stream.rows())
    return previous


def _delete_cids(cursor, cids: list[int]) -> None:
    """Delete every CRM row of the given CIDs (notes' children first)."""
    notes = "SELECT id FROM crm_notes WHERE organization_id = ANY(%(cids)s)"
    for table, column in (
        ("assets", "assetable_id"),
        ("crm_note_attachments", "crm_note_id"),
        ("crm_checkins", "crm_note_id"),
    ):
        cursor.execute(f"DELETE FROM {table} WHERE {column} IN ({notes})", {"cids": cids})
    cursor.execute("DELETE FROM audits WHERE id >= %s AND id < %s", (AUDIT_ID_BASE, AUDIT_ID_END))
    for table in (*AUDIT_TABLES[:-1], "crm_notes", "users", "crm_people"):
        cursor.execute(f"DELETE FROM {table} WHERE organization_id = ANY(%s)", (cids,))
    for table in ("crm_companies", "crm_deals", "crm_tickets"):
        cursor.execute(f"DELETE FROM {table} WHERE organization_id = ANY(%s)", (cids,))
    cursor.execute("DELETE FROM organizations WHERE id = ANY(%s)", (cids,))


def _upsert_note_types(cursor, dataset: Dataset) -> None:
    """Insert or rename the activity types (other writers may share the table)."""
    for row in dataset.crm_note_types:
        cursor.execute(
            "INSERT INTO crm_note_types (id, name) VALUES (%(id)s, %(name)s)"
            " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
            row,
        )


def write_identity(
    conn, dataset: Dataset, previous_company_ids: Iterable[str] = (), truncate: bool = False
) -> None:
    """Create ``sso_users`` and replace the synthetic tenants' identity rows."""
    stale = sorted(set(previous_company_ids) | {o["company_sso_id"] for o in dataset.organizations})
    with conn, conn.cursor() as cursor:
        cursor.execute(schema_sql("identity_schema.sql"))
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOCK_NAME,))
        if truncate:
            cursor.execute("TRUNCATE sso_users")
        else:
            cursor.execute("DELETE FROM sso_users WHERE company_sso_id = ANY(%s)", (stale,))
        rows = (tuple(r[c] for c in SSO_COLUMNS) for r in dataset.sso_users)
        _copy(cursor, "sso_users", SSO_COLUMNS, rows)


# --- MongoDB ------------------------------------------------------------------


def write_contacts(db, dataset: Dataset, previous_company_ids: Iterable[str] = ()) -> None:
    """Replace the synthetic tenants' CDP contacts and ``crm_contact_id_map`` rows (old and
    new) and ensure the lookup indexes (``crm_data.id``; ``source_id`` and the map's unique
    key, SPEC-activity-logs §5)."""
    stale = set(dataset.company_sso_ids())
    stale |= {i for old in previous_company_ids for i in (old, decoy_company_sso_id(old))}
    id_map = db[CONTACT_ID_MAP]
    id_map.delete_many({"company_sso_id": {"$in": sorted(stale)}})
    if dataset.contact_id_map:
        id_map.insert_many([dict(row) for row in dataset.contact_id_map], ordered=False)
    _ensure_index(id_map, ID_MAP_INDEX_KEYS, ID_MAP_INDEX, unique=True)
    contacts = db["contacts"]
    contacts.delete_many({"company_sso_id": {"$in": sorted(stale)}})
    ids = [c["_id"] for c in dataset.contacts]
    for chunk in _chunks(ids, 2000):
        contacts.delete_many({"_id": {"$in": chunk}})
    for chunk in _chunks(dataset.contacts, 1000):
        contacts.insert_many([dict(c, crm_data=dict(c["crm_data"])) for c in chunk], ordered=False)
    ensure_contact_index(contacts)
    _ensure_index(contacts, SOURCE_ID_INDEX_KEYS, SOURCE_ID_INDEX)


def _ensure_index(collection, keys: list[tuple[str, int]], name: str, unique: bool = False) -> str:
    """Create an index on ``keys`` unless one on the same keys (any name) exists."""
    for index in collection.list_indexes():
        if [(k, int(v)) for k, v in index["key"].items()] == keys:
            return index["name"]
    return collection.create_index(keys, name=name, unique=unique)


def ensure_contact_index(contacts) -> str:
    """Index (company_sso_id, crm_data.id); an existing index on those keys (any name) is kept."""
    for index in contacts.list_indexes():
        if [(k, int(v)) for k, v in index["key"].items()] == CONTACT_INDEX_KEYS:
            return index["name"]
    return contacts.create_index(CONTACT_INDEX_KEYS, name=CONTACT_INDEX)


def _chunks(items: list, size: int) -> Iterator[list]:
    """Consecutive slices of ``items``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- S3 -----------------------------------------------------------------------


def s3_client(endpoint_url: str | None, workers: int = 32):
    """A boto3 S3 client sized for ``workers`` threads."""
    import boto3
    from botocore.config import Config

    config = Config(
        max_pool_connections=workers,
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        config=config,
        region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or "test",
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or "test",
    )


def _ensure_bucket(s3, bucket: str) -> None:
    """Create the bucket when missing."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)


def _existing_etags(s3, bucket: str) -> dict[str, str]:
    """key -> ETag (md5 hex) of every object under OBJECT_PREFIX."""
    found: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=OBJECT_PREFIX):
        for item in page.get("Contents", []):
            found[item["Key"]] = item["ETag"].strip('"')
    return found


def write_objects(s3, bucket: str, dataset: Dataset, workers: int = 32) -> dict[str, int]:
    """Make ``orgs/`` in the bucket hold exactly the dataset's objects (unchanged ones skipped)."""
    _ensure_bucket(s3, bucket)
    existing = _existing_etags(s3, bucket)
    stale = sorted(set(existing) - set(dataset.objects))
    for chunk in _chunks(stale, 1000):
        s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
        )
    todo = [
        obj
        for key, obj in dataset.objects.items()
        if existing.get(key) != hashlib.md5(obj.data).hexdigest()
    ]

    def put(obj: StoredObject) -> None:
        s3.put_object(Bucket=bucket, Key=obj.key, Body=obj.data, ContentType=obj.content_type)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(put, todo))
    return {
        "uploaded": len(todo),
        "unchanged": len(dataset.objects) - len(todo),
        "deleted": len(stale),
    }


# --- all together ---------------------------------------------------------------


def seed(
    dataset: Dataset,
    targets: Targets,
    attachments: bool = True,
    workers: int = 32,
    truncate: bool = False,
) -> dict:
    """Replace the stack's synthetic data with ``dataset``; return counts and timings.

    ``truncate=True`` also wipes non-synthetic CRM and identity rows.
    """
    import psycopg2
    from pymongo import MongoClient

    timings: dict[str, float] = {}
    started = time.monotonic()
    with closing(psycopg2.connect(targets.crm_dsn)) as conn:
        previous = write_crm(conn, dataset, targets.attachment_base_url, truncate)
    timings["crm_s"] = _lap(started)
    with closing(psycopg2.connect(targets.identity_dsn)) as conn:
        write_identity(conn, dataset, previous, truncate)
    timings["identity_s"] = _lap(started, timings)
    with MongoClient(targets.mongo_uri) as client:
        write_contacts(client[targets.mongo_db], dataset, previous)
    timings["contacts_s"] = _lap(started, timings)
    objects = {"uploaded": 0, "unchanged": 0, "deleted": 0, "skipped": not attachments}
    if attachments:
        s3 = s3_client(targets.s3_endpoint_url, workers)
        objects.update(write_objects(s3, targets.bucket, dataset, workers))
    timings["objects_s"] = _lap(started, timings)
    timings["total_s"] = round(time.monotonic() - started, 2)
    return {
        "profile": dataset.profile,
        "seed": dataset.seed,
        "fingerprint": dataset.fingerprint(),
        "rows": {t: len(dataset.table(t)) for t in TABLES},
        "audit_rows": {
            **{t: len(dataset.table(t)) for t in AUDIT_TABLES},
            "audits": dataset.audit_count(),
        },
        "contact_id_map": len(dataset.contact_id_map),
        "sso_users": len(dataset.sso_users),
        "contacts": len(dataset.contacts),
        "objects": objects,
        "timings": timings,
    }


def _lap(started: float, timings: Mapping[str, float] | None = None) -> float:
    """Seconds since ``started`` minus the laps already recorded."""
    return round(time.monotonic() - started - sum((timings or {}).values()), 2)
