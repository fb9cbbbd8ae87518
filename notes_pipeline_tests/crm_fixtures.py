"""Small hand-built CRM accounts for tests: one org, its notes, contacts, identity and files."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any

import boto3
import psycopg2
import psycopg2.extras

WIB = timezone(timedelta(hours=7))
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)
MP3 = b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + bytes(200)
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@dataclass
class FixtureNote:
    id: int
    person_id: int | None = None
    note_type_id: int = 1
    html: str | None = "<b>Follow up</b> on renewal"
    creator_id: int | None = None
    created_at: datetime | str | None = datetime(2022, 3, 4, 10, 0, tzinfo=WIB)
    updated_at: datetime | str | None = datetime(2022, 3, 5, 11, 0, tzinfo=WIB)
    deal_id: int | None = None
    company_id: int | None = None
    images: list[tuple[int, str, bytes | str | None, str]] = field(default_factory=list)
    audios: list[tuple[int, str, bytes | str | None, str]] = field(default_factory=list)
    documents: list[tuple[int, str, bytes | str | None, str]] = field(default_factory=list)
    checkin: bool = False


@dataclass
class FixtureOrg:
    """An org whose ids all live in its own range (cid × 1000 + n)."""

    cid: int
    notes: list[FixtureNote]
    mapped_person_ids: set[int]
    users: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (name, email)
    sso_emails: dict[str, str] = field(default_factory=dict)  # email -> sso id
    company_sso_id: str = ""
    contact_ids: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.company_sso_id = self.company_sso_id or f"company-{self.cid}"
        self.contact_ids = {pid: f"contact-{self.cid}-{pid}" for pid in self.mapped_person_ids}

    def row_id(self, local_id: int | None) -> int | None:
        """Person/user ids are local to the fixture; rows get `cid × 1000 + id`."""
        return None if local_id is None else self.cid * 1000 + local_id


def file_url(key: str) -> str:
    return f"{os.environ['NOTES_PIPELINE_CRM_ATTACHMENT_BASE_URL']}/{key}"


def install(org: FixtureOrg, mongo_db) -> None:
    """Replace everything of this org in the CRM, identity, CDP contacts and the CRM bucket."""
    schema = resources.files("notes_pipeline").joinpath("crm_schema.sql").read_text()
    identity_schema = resources.files("notes_pipeline").joinpath("identity_schema.sql").read_text()
    s3 = boto3.client("s3", endpoint_url=os.environ["NOTES_PIPELINE_S3_ENDPOINT_URL"])
    bucket = os.environ["NOTES_PIPELINE_CRM_BUCKET"]
    with psycopg2.connect(os.environ["NOTES_PIPELINE_CRM_ADMIN_DSN"]) as conn, conn.cursor() as cur:
        cur.execute(schema)
        _delete_org(cur, org.cid)
        cur.execute(
            "INSERT INTO crm_note_types (id, name) VALUES (1,'Notes'),(2,'Calls'),(3,'Emails'),"
            "(4,'Meetings'),(5,'WhatsApp'),(6,'Documents'),(7,'SMS') ON CONFLICT DO NOTHING"
        )
        cur.execute(
            "INSERT INTO organizations VALUES (%s, %s, %s)",
            (org.cid, f"Org {org.cid}", org.company_sso_id),
        )
        for uid, (name, email) in org.users.items():
            cur.execute(
                "INSERT INTO users VALUES (%s, %s, %s, %s, NULL)",
                (org.row_id(uid), org.cid, name, email),
            )
        people = {n.person_id for n in org.notes if n.person_id} | org.mapped_person_ids
        for pid in sorted(people):
            cur.execute(
                "INSERT INTO crm_people (id, organization_id, full_name) VALUES (%s,%s,%s)",
                (org.row_id(pid), org.cid, f"Person {pid}"),
            )
        for n in org.notes:
            _insert_note(cur, org, n, s3, bucket)
    with psycopg2.connect(os.environ["NOTES_PIPELINE_IDENTITY_DSN"]) as conn, conn.cursor() as cur:
        cur.execute(identity_schema)
        cur.execute("DELETE FROM sso_users WHERE company_sso_id = %s", (org.company_sso_id,))
        for email, sso in org.sso_emails.items():
            cur.execute(
                "INSERT INTO sso_users VALUES (%s, %s, %s)", (org.company_sso_id, email, sso)
            )
    mongo_db.contacts.delete_many({"company_sso_id": org.company_sso_id})
    if org.contact_ids:
        mongo_db.contacts.insert_many(
            [
                {
                    "_id": cid_,
                    "company_sso_id": org.company_sso_id,
                    "crm_data": {"id": str(org.row_id(pid))},
                    "source": "crm",
                    "source_id": str(org.row_id(pid)),
                }
                for pid, cid_ in org.contact_ids.items()
            ]
        )


def install_fresh(org: FixtureOrg, mongo_db) -> FixtureOrg:
    """`install` the org and remove any CDP notes its company got from earlier runs."""
    install(org, mongo_db)
    mongo_db.contact_notes.delete_many({"company_sso_id": org.company_sso_id})
    return org


def _delete_org(cur, cid: int) -> None:
    cur.execute("SELECT id FROM crm_notes WHERE organization_id = %s", (cid,))
    ids = [row[0] for row in cur.fetchall()]
    cur.execute("DELETE FROM assets WHERE assetable_id = ANY(%s)", (ids,))
    cur.execute("DELETE FROM crm_note_attachments WHERE crm_note_id = ANY(%s)", (ids,))
    cur.execute("DELETE FROM crm_checkins WHERE crm_note_id = ANY(%s)", (ids,))
    for table in ("crm_notes", "crm_people", "users", "crm_deals", "crm_companies"):
        cur.execute(f"DELETE FROM {table} WHERE organization_id = %s", (cid,))
    cur.execute("DELETE FROM organizations WHERE id = %s", (cid,))


def _insert_note(cur, org: FixtureOrg, n: FixtureNote, s3, bucket: str) -> None:
    note_type = "Crm::PersonNote" if n.person_id else "Crm::DealNote"
    cur.execute(
        "INSERT INTO crm_notes (id, organization_id, type, crm_person_id, crm_company_id,"
        " crm_deal_id, crm_note_type_id, note, creator_id, created_at, updated_at)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            n.id,
            org.cid,
            note_type,
            org.row_id(n.person_id),
            n.company_id,
            n.deal_id,
            n.note_type_id,
            n.html,
            org.row_id(n.creator_id),
            n.created_at,
            n.updated_at,
        ),
    )
    for kind, items in (("image", n.images), ("audio", n.audios)):
        for asset_id, name, data, content_type in items:
            url = _put(s3, bucket, org.cid, n.id, f"a{asset_id}-{name}", data)
            cur.execute(
                "INSERT INTO assets VALUES (%s,'Crm::Note',%s,%s,%s,%s,%s,%s)",
                (
                    asset_id,
                    n.id,
                    kind,
                    url,
                    name,
                    content_type,
                    len(data) if isinstance(data, bytes) else 100,
                ),
            )
    for doc_id, name, data, content_type in n.documents:
        url = _put(s3, bucket, org.cid, n.id, f"d{doc_id}-{name}", data)
        cur.execute(
            "INSERT INTO crm_note_attachments VALUES (%s,%s,%s,%s,%s,%s)",
            (doc_id, n.id, url, name, content_type, len(data) if isinstance(data, bytes) else 100),
        )
    if n.checkin:
        cur.execute(
            "INSERT INTO crm_checkins VALUES (%s,%s,-6.2,106.8,'Jakarta',%s)",
            (n.id, n.id, n.created_at),
        )


def _put(s3, bucket: str, cid: int, note_id: int, name: str, data: bytes | str | None) -> str:
    """Upload `data`; None leaves the object missing; a str is used as the URL itself."""
    if isinstance(data, str):
        return data
    key = f"test/{cid}/{note_id}/{name}"
    if data is not None:
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    return file_url(key)


def new_company() -> str:
    return f"company-{uuid.uuid4().hex[:8]}"


def plain(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_id"}
