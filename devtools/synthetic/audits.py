"""Synthetic CRM audits for the activity-log family (SPEC-activity-logs §2, §16).

``build_audits(ds, orgs)`` adds, after every organization's notes were generated (so the notes
part of a dataset is unchanged), the tables of ``notes_pipeline/activity_logs/audits_schema.sql``
— ``audits`` with ``audited_changes`` as the Rails ``audited`` gem writes it (Psych YAML with
Ruby tags, or JSON), ``crm_tasks`` and the three join tables — plus CRM users for the actor
cases, audit-only persons, their CDP contacts (``source_id``), ``crm_contact_id_map`` rows and
identity rows.

Every audit carries case tags (``Dataset.audit_tags``) and the plan the spec's rules must give
it (``Dataset.audit_expected``: outcome and code, category/action with the id-sets empty and
configured, actor case, contact path, customer id, changes, created_at), decided here from
what each case was built to be — never by running the pipeline's rules.

Profiles: ``stage1`` (CIDs 1001 and 1002: exactly ``STAGE1_AUDITS`` in-scope audits, every
record-level §16 case), ``full`` (a few audits per CID, plus the CID-level cases of
``FULL_ROLES``) and ``perf`` (``PERF_AUDITS`` audits of one CID interleaved with a filler CID,
generated lazily and written with COPY by the writer; benchmarks only).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import yaml

from devtools.synthetic import content

if TYPE_CHECKING:
    from devtools.synthetic.dataset import Dataset, _OrgBuilder

AUDIT_TABLES = ("crm_tasks", "crm_deal_people", "crm_task_people", "crm_ticket_people", "audits")
AUDIT_COLUMNS = (
    "id",
    "auditable_id",
    "auditable_type",
    "associated_id",
    "associated_type",
    "user_id",
    "user_type",
    "username",
    "action",
    "audited_changes",
    "version",
    "comment",
    "remote_address",
    "request_uuid",
    "created_at",
)
# Synthetic id ranges (never meeting the notes' ranges nor test fixtures, cid × 1000 + n).
AUDIT_ID_BASE = 100_000_001  # stage1 / full audits
PERF_AUDIT_ID_BASE = 200_000_001  # perf audits
AUDIT_ID_END = 300_000_000  # every synthetic audit id is in [AUDIT_ID_BASE, AUDIT_ID_END)
ROW_BASES = {
    "users": 11_000_001,
    "crm_people": 21_000_001,
    "crm_tasks": 33_000_001,
    "crm_deal_people": 34_000_001,
    "crm_task_people": 35_000_001,
    "crm_ticket_people": 36_000_001,
}
MISSING_USER_BASE = 11_900_001  # user ids without a users row (actor case A4)
DELETED_ROW_BASE = 29_900_001  # hard-deleted owners (unattributable audits)

#: the date_range_start the stage1 cases are built around (created_at before / equal / after)
DATE_RANGE_START = datetime(2022, 1, 1)
#: the status id-sets the "configured" expectations use (OQ-12 defaults are empty)
CONFIGURED_ID_SETS = {
    "won_stage_ids": [7],
    "done_task_status_ids": [3],
    "resolved_ticket_status_ids": [4],
}
KINDS = {
    "Crm::Person": "person",
    "Crm::Deal": "deal",
    "Crm::Task": "task",
    "Crm::Ticket": "ticket",
    "Crm::DealPerson": "join:deal",
    "Crm::TaskPerson": "join:task",
    "Crm::TicketPerson": "join:ticket",
}
OUT_OF_SCOPE_TYPES = ("Crm::Company", "User")
OWNER_TYPE = {"deal": "Crm::Deal", "task": "Crm::Task", "ticket": "Crm::Ticket"}
JOIN_TYPE = {"deal": "Crm::DealPerson", "task": "Crm::TaskPerson", "ticket": "Crm::TicketPerson"}
JOIN_TABLE = {"deal": "crm_deal_people", "task": "crm_task_people", "ticket": "crm_ticket_people"}
STATUS_KEY = {
    "deal": "crm_stage_id",
    "task": "crm_task_status_id",
    "ticket": "crm_ticket_status_id",
}
CONFIGURED_VERB = {"deal": "won", "task": "completed", "ticket": "resolved"}
MAX_BYTES = 1 << 20
SPAN_MINUTES = 6 * 365 * 24 * 60  # generic audits spread over 2019-2024

#: in-scope audits (the Stage-0 COUNT without date_range_start) per stage1 CID
STAGE1_AUDITS = {1001: 250, 1002: 1750}
#: CID-level §16 cases of the full profile: CID → role
FULL_ROLES = {
    2001: "map_only",
    2011: "coverage_98_9",
    2012: "coverage_99_0",
    2013: "audits_500",
    2014: "audits_501",
    2015: "audits_0",
}
ROLE_AUDITS = {
    "map_only": 100,
    "coverage_98_9": 1000,
    "coverage_99_0": 100,
    "audits_500": 500,
    "audits_501": 501,
    "audits_0": 0,
}
ROLE_NOT_FOUND = {"coverage_98_9": 11, "coverage_99_0": 1}
FULL_DEFAULT_AUDITS = 4
PERF_CID, PERF_FILLER_CID = 3001, 3002
PERF_AUDITS = 1_000_000
PERF_FILLER_AUDITS = 500_000
PERF_PERSONS, PERF_FILLER_PERSONS = 5_000, 1_000

#: record-level §16 cases, each tagged on at least one stage1 audit
RECORD_CASES = (
    # YAML (§4.1)
    "yaml:create_scalars",
    "yaml:update_scalars",
    "yaml:destroy_scalars",
    "yaml:update_array",
    "yaml:create_two_element_array",
    "yaml:json_text",
    "yaml:bigdecimal",
    "yaml:time_with_zone",
    "yaml:date",
    "yaml:time_offset",
    "yaml:hash_with_indifferent_access",
    "yaml:symbols",
    "yaml:unknown_ruby_object",
    "yaml:anchors_aliases",
    "yaml:alias_bomb",
    "yaml:multiline_unicode_emoji",
    "yaml:oversize",
    "yaml:empty_map",
    "yaml:malformed",
    "yaml:non_map_root",
    "yaml:update_not_pair",
    "yaml:binary",
    # CategoryMapper (§4.2)
    *(f"mapper:row{n}" for n in range(1, 12)),
    "mapper:status_change",
    "mapper:create_with_won_stage",
    "mapper:join_create",
    "mapper:join_update",
    "mapper:join_destroy",
    "mapper:unknown_action",
    "mapper:out_of_scope_type",
    # ActorResolver (§4.4)
    "actor:A1",
    "actor:A2",
    "actor:A3",
    "actor:A4",
    "actor:email_null",
    "actor:usman_empty",
    "actor:deactivated_with_sso",
    "actor:deactivated_empty",
    "actor:deleted_at_resolved",
    "actor:email_variant",
    "actor:email_in_other_company",
    # ContactResolver (§4.3)
    "contact:comment_and_yaml_differ",
    "contact:comment_digit_string",
    "contact:malformed_comment",
    "contact:comment_without_key",
    "contact:yaml_to",
    "contact:yaml_from",
    "contact:auditable",
    "contact:associated",
    "contact:source_id_hit",
    "contact:map_hit",
    "contact:double_miss",
    "contact:source_id_other_company_only",
    "contact:duplicate_contacts",
    # extraction (§3)
    "extraction:before_date_range_start",
    "extraction:at_date_range_start",
    "extraction:after_date_range_start",
    "extraction:naive_timestamp",
    "extraction:aware_timestamp",
    "extraction:unattributable",
    "extraction:null_created_at",
    "extraction:infinite_created_at",
    # PII (§10)
    "pii:names_emails_phones",
)
#: CID-level §16 cases (profile → case → how the data shows it)
CID_CASES = {
    "stage1": (
        "actor:same_user_1000_audits",
        "extraction:id_gaps",
        "extraction:interleaved_cids",
    ),
    "full": tuple(f"cid:{role}" for role in ROLE_AUDITS),
    "perf": ("perf:1m_audits", "perf:filler_cid"),
}
#: §16 cases that are test actions or part 2, not data (case → where they are exercised)
NOT_DATA_CASES = {
    "actor:usman_timeout_once": "test_activity_log_lookups.py (identity retry recovers)",
    "actor:usman_timeout_persistent": "test_activity_log_lookups.py (actor_lookup_failed)",
    "extraction:rows_inserted_during_extraction": "test_activity_logs_stage1.py",
    "load:*, rollback:*": "part 2 (#13): writes to CDP",
}


def _tz(hours: int) -> timezone:
    return timezone(timedelta(hours=hours))


def utc_ms(value: datetime) -> datetime:
    """The §4.5 value of a created_at: naive UTC, truncated to milliseconds."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def dump(data: dict[str, Any]) -> str:
    """A change map as Psych writes it for plain values (``---`` header, block style)."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, explicit_start=True)


@dataclass(frozen=True)
class Actor:
    """Who an audit says did it and what §4.4 must make of it."""

    user_id: int | None
    case: str  # A1..A4
    sso_id: str | None = None


@dataclass
class _World:
    """Id sequences and the audits of one dataset, before ids are given."""

    ds: Dataset
    seed: int
    profile: str
    next_ids: dict[str, int] = field(default_factory=lambda: dict(ROW_BASES))
    pending: list[tuple[tuple, dict, tuple[str, ...], dict, int | None]] = field(
        default_factory=list
    )

    def next(self, table: str) -> int:
        value = self.next_ids[table]
        self.next_ids[table] = value + 1
        return value

    def add(self, row: dict, tags: tuple[str, ...], expected: dict, cid: int | None) -> None:
        stamp = row["created_at"]
        if isinstance(stamp, datetime):
            key = (0, utc_ms(stamp).isoformat(), len(self.pending))
        else:  # None / 'infinity': after every dated audit
            key = (1, "", len(self.pending))
        self.pending.append((key, row, tags, expected, cid))

    def assign_ids(self) -> None:
        """Ids in created_at order with gaps, so CIDs interleave (§16 extraction)."""
        rng = random.Random(f"{self.seed}:{self.profile}:audit-ids")
        next_id = AUDIT_ID_BASE
        for _key, row, tags, expected, cid in sorted(self.pending, key=lambda p: p[0]):
            next_id += rng.choice((1, 1, 1, 1, 2, 3, 17))
            row["id"] = next_id
            self.ds.audits.append(row)
            self.ds.audit_tags[next_id] = tuple(sorted(tags))
            self.ds.audit_expected[next_id] = expected
            self.ds.audit_cids[next_id] = cid
        self.pending.clear()


def build_audits(ds: Dataset, orgs: list[_OrgBuilder]) -> None:
    """Add the activity-log tables, users, persons, contacts, map and identity rows of
    ``ds.profile`` to ``ds`` (see the module docstring). Deterministic in ``ds.seed``."""
    world = _World(ds, ds.seed, ds.profile)
    if ds.profile == "perf":
        ds.audit_stream = PerfAudits.build(world, orgs)
        return
    for org in orgs:
        builder = _OrgAudits(world, org)
        if ds.profile == "stage1":
            builder.pace(STAGE1_AUDITS[org.cid])
            builder.stage1(STAGE1_AUDITS[org.cid])
        else:
            role = FULL_ROLES.get(org.cid)
            target = ROLE_AUDITS[role] if role else FULL_DEFAULT_AUDITS
            builder.pace(target)
            builder.full(role, target)
    if ds.profile == "stage1":
        _global_rows(world, orgs)
    world.assign_ids()


class _OrgAudits:
    """The audits of one organization and the rows they need."""

    def __init__(self, world: _World, org: _OrgBuilder) -> None:
        self.world, self.org, self.ds = world, org, world.ds
        self.cid = org.cid
        self.company = org.company_sso_id
        self.rng = random.Random(f"{world.seed}:{world.profile}:{org.cid}:audits")
        self.sso = {
            r["email"]: r["sso_id"]
            for r in self.ds.sso_users
            if r["company_sso_id"] == self.company
        }
        self.contacts: dict[int, list[str]] = {}
        for contact in self.ds.contacts:
            if contact["company_sso_id"] == self.company:
                self.contacts.setdefault(int(contact["crm_data"]["id"]), []).append(contact["_id"])
        self.mapped = sorted(p for p in org.people if p in self.contacts)
        self.unmapped = sorted(p for p in org.people if p not in self.contacts)
        self.id_map: dict[int, str] = {}
        self.deals = list(org.entities["crm_deals"])
        self.tickets = list(org.entities["crm_tickets"])
        self.companies = list(org.entities["crm_companies"])
        self.tasks = [self._task() for _ in range(max(2, len(self.deals)))]
        self.joins: dict[str, list[tuple[int, int, int]]] = {k: [] for k in JOIN_TYPE}
        known = [u for u in org.users if u["email"] in self.sso]
        self.known_actors = [Actor(u["id"], "A2", self.sso[u["email"]]) for u in known[:5]]
        self.main = self._user("main", sso=True)
        self.clock = datetime(2019, 1, 2, 8, 0) + timedelta(minutes=self.rng.randrange(600))
        self.count = 0  # in-scope audits with a created_at (the Stage-0 COUNT)
        self.step_minutes = 60 * 24

    # --- rows -------------------------------------------------------------------------
    def _task(self) -> int:
        tid = self.world.next("crm_tasks")
        self.ds.crm_tasks.append(
            {"id": tid, "organization_id": self.cid, "name": f"Tugas #{tid} follow up"}
        )
        return tid

    def _join(self, kind: str, person: int) -> int:
        owner = self.rng.choice(
            {"deal": self.deals, "task": self.tasks, "ticket": self.tickets}[kind]
        )
        jid = self.world.next(JOIN_TABLE[kind])
        getattr(self.ds, JOIN_TABLE[kind]).append(
            {
                "id": jid,
                "organization_id": self.cid,
                f"crm_{kind}_id": owner,
                "crm_person_id": person,
            }
        )
        self.joins[kind].append((jid, owner, person))
        return jid

    def _user(
        self,
        label: str,
        *,
        sso: bool,
        email: str | None | bool = True,
        deleted: bool = False,
        sso_company: str | None = None,
    ) -> Actor:
        """A CRM user made for an actor case; ``sso``: the identity service knows its email
        (in ``sso_company``, default this company)."""
        uid = self.world.next("users")
        name = content.person_name(self.rng)
        address = None
        if email is True:
            address = content.email_for(name, uid, f"org{self.cid}.co.id")
        elif isinstance(email, str):
            address = email
        self.ds.users.append(
            {
                "id": uid,
                "organization_id": self.cid,
                "full_name": name,
                "email": address,
                "deleted_at": datetime(2023, 6, 1, tzinfo=_tz(7)) if deleted else None,
            }
        )
        self.ds.pii.extend(v for v in (name, address) if v)
        sso_id = None
        if sso and address:
            sso_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.world.seed}/sso/{uid}/{label}"))
            self.ds.sso_users.append(
                {"company_sso_id": sso_company or self.company, "email": address, "sso_id": sso_id}
            )
        resolved = sso_id if sso_company is None else None
        return Actor(uid, "A2" if resolved else "A3", resolved)

    def _person_with_duplicate_contacts(self) -> int:
        pid = self.world.next("crm_people")
        name = content.person_name(self.rng)
        self.ds.crm_people.append(
            {
                "id": pid,
                "organization_id": self.cid,
                "full_name": name,
                "email": content.email_for(name, pid, "gmail.com"),
                "phone": None,
            }
        )
        ids = []
        for n in (1, 2):
            contact_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.world.seed}/dup/{pid}/{n}"))
            ids.append(contact_id)
            self.ds.contacts.append(
                {
                    "_id": contact_id,
                    "company_sso_id": self.company,
                    "name": name,
                    "crm_data": {"id": str(pid)},
                    "source": "crm",
                    "source_id": str(pid),
                    "created_at": datetime(2020, 1, n, tzinfo=UTC),
                }
            )
        self.contacts[pid] = ids
        self.ds.pii.append(name)
        return pid

    def _map(self, pid: int) -> str:
        customer = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.world.seed}/map/{pid}"))
        self.ds.contact_id_map.append(
            {"company_sso_id": self.company, "crm_person_id": pid, "customer_id": customer}
        )
        self.id_map[pid] = customer
        return customer

    def pace(self, target: int) -> None:
        """Spread ``target`` audits over 2019-2024 (every created_at stays in the past)."""
        self.step_minutes = max(10, SPAN_MINUTES // max(target + 20, 1))

    def _tick(self) -> datetime:
        step = self.step_minutes
        self.clock += timedelta(
            minutes=self.rng.randint(step // 2, step + step // 2), seconds=self.rng.randrange(60)
        )
        if self.rng.random() < 0.3:
            self.clock = self.clock.replace(microsecond=self.rng.randrange(1, 1_000_000))
        return self.clock

    # --- expectations ----------------------------------------------------------------
    def _contact(self, pid: int | None) -> tuple[str, str] | None:
        if pid is None:
            return None
        if pid in self.contacts:
            return "source_id", min(self.contacts[pid])
        if pid in self.id_map:
            return "crm_contact_id_map", self.id_map[pid]
        return None

    def add(
        self,
        tags: tuple[str, ...],
        *,
        auditable: tuple[str, int],
        action: str,
        text: str | None,
        changes: list[dict] | None,
        category: tuple[str, str] | None,
        person: tuple[int, str] | None,
        actor: Actor,
        associated: tuple[str | None, int | None] = (None, None),
        comment: str | None = None,
        created_at: datetime | str | None = None,
        configured: str | None = None,
        failure: str | None = None,
        counted: bool = True,
        cid: int | None | bool = True,
    ) -> None:
        """One audit row and its expected plan.

        ``changes``: the expected ``changes[]``; ``category``: (category, action) with empty
        id-sets, ``configured``: the action with ``CONFIGURED_ID_SETS``; ``person``: (id,
        step) of §4.3 steps 1-3; ``failure``: a code decided before the contact step
        (``invalid_audited_changes``) or ``unmapped_action_type`` (skip); ``counted``: in the
        Stage-0 COUNT (in scope, attributable, with a created_at)."""
        stamp = self._tick() if created_at is None else created_at
        if stamp == "null":
            stamp = None
        owner = self.cid if cid is True else (cid or None)
        row = {
            "id": None,
            "auditable_id": auditable[1],
            "auditable_type": auditable[0],
            "associated_id": associated[1],
            "associated_type": associated[0],
            "user_id": actor.user_id,
            "user_type": "User" if actor.user_id is not None else None,
            "username": None,
            "action": action,
            "audited_changes": text,
            "version": self.rng.randint(1, 9),
            "comment": comment,
            "remote_address": f"10.{self.cid % 250}.{self.rng.randrange(256)}.1",
            "request_uuid": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "created_at": stamp,
        }
        in_scope = auditable[0] in KINDS and stamp is not None and owner is not None
        expected = self._expected(
            in_scope, action, changes, category, person, actor, stamp, configured, failure
        )
        if counted and in_scope:
            self.count += 1
        if isinstance(stamp, datetime):
            tags = (
                *tags,
                "extraction:aware_timestamp" if stamp.tzinfo else "extraction:naive_timestamp",
            )
        self.world.add(row, tags, expected, owner)

    def _expected(
        self, in_scope, action, changes, category, person, actor, stamp, configured, failure
    ) -> dict[str, Any]:
        if not in_scope:
            return {"outcome": "not_extracted"}
        if failure == "unmapped_action_type":
            return {"outcome": "skipped", "code": failure}
        if failure is not None:
            return {"outcome": "failed", "code": failure}
        assert category is not None
        expected: dict[str, Any] = {
            "category": category[0],
            "action": category[1],
            "action_configured": configured or category[1],
            "crm_person_id": person[0] if person else None,
            "person_source": person[1] if person else None,
        }
        contact = self._contact(person[0] if person else None)
        if contact is None:
            return {**expected, "outcome": "failed", "code": "contact_not_found"}
        expected.update(
            contact_resolved_by=contact[0],
            customer_id=contact[1],
            actor_case=actor.case,
            user_id=actor.sso_id,
        )
        if not isinstance(stamp, datetime):
            return {**expected, "outcome": "failed", "code": "invalid_timestamp"}
        return {**expected, "outcome": "ready", "changes": changes, "created_at": utc_ms(stamp)}

    # --- generic audits ----------------------------------------------------------------
    def _actor(self) -> Actor:
        r = self.rng.random()
        if r < 0.05:
            return Actor(None, "A1")
        if r < 0.15 and self.known_actors:
            return self.rng.choice(self.known_actors)
        return self.main

    def _person_values(self, pid: int) -> dict[str, Any]:
        name = self.org.person_names.get(pid) or content.person_name(self.rng)
        mail = content.email_for(name, pid, "gmail.com")
        phone = f"+62 8{self.rng.randint(11, 59)} {self.rng.randint(1000, 9999)} {pid % 10000:04d}"
        self.ds.pii.extend((name, mail, phone))
        return {"full_name": name, "email": mail, "phone": phone}

    def generic(self, persons: list[int] | None = None, tags: tuple[str, ...] = ()) -> None:
        """One ordinary, plannable audit of a random kind (every one resolves a contact)."""
        rng = self.rng
        pool = persons or self.mapped
        pid = rng.choice(pool)
        actor = self._actor()
        r = rng.random()
        if persons is not None or r < 0.42:  # person update (rows 2, 10 fallthrough: row 2)
            old, new = self._person_values(pid), self._person_values(pid)
            field_name = rng.choice(("full_name", "email", "phone"))
            extra = rng.choice(
                (("score", rng.randint(0, 50), rng.randint(51, 100)), ("vip", False, True))
            )
            data = {field_name: [old[field_name], new[field_name]], extra[0]: list(extra[1:])}
            changes = [{"field": k, "from": v[0], "to": v[1]} for k, v in data.items()]
            self.add(
                (*tags, "mapper:row2", "contact:auditable", "contact:source_id_hit"),
                auditable=("Crm::Person", pid),
                action="update",
                text=dump(data),
                changes=changes,
                category=("contact", "update"),
                person=(pid, "auditable"),
                actor=actor,
            )
        elif r < 0.62:  # deal/task/ticket update without a status verb (row 10)
            kind = rng.choice(("deal", "deal", "task", "ticket"))
            owner = rng.choice(
                {"deal": self.deals, "task": self.tasks, "ticket": self.tickets}[kind]
            )
            status = STATUS_KEY[kind]
            data = {"name": [f"{kind} {owner} v1", f"{kind} {owner} v2"], status: [1, 2]}
            changes = [{"field": k, "from": v[0], "to": v[1]} for k, v in data.items()]
            use_comment = kind == "ticket"
            self.add(
                (
                    *tags,
                    "mapper:row10",
                    "contact:comment_digit_string" if use_comment else "contact:associated",
                ),
                auditable=(OWNER_TYPE[kind], owner),
                associated=(None, None) if use_comment else ("Crm::Person", pid),
                comment=json.dumps({"crm_person_id": str(pid)}) if use_comment else None,
                action="update",
                text=dump(data),
                changes=changes,
                category=(kind, "update"),
                person=(pid, "comment" if use_comment else "associated"),
                actor=actor,
            )
        elif r < 0.72:  # owner create / destroy (row 4), person in the YAML
            kind = rng.choice(("deal", "task", "ticket"))
            owner = rng.choice(
                {"deal": self.deals, "task": self.tasks, "ticket": self.tickets}[kind]
            )
            action = rng.choice(("create", "destroy"))
            values = {"name": f"{kind} {owner}", "crm_person_id": pid, STATUS_KEY[kind]: 1}
            changes = [
                {
                    "field": k,
                    "from": None if action == "create" else v,
                    "to": v if action == "create" else None,
                }
                for k, v in values.items()
            ]
            self.add(
                (
                    *tags,
                    "mapper:row4",
                    "contact:yaml_to" if action == "create" else "contact:yaml_from",
                ),
                auditable=(OWNER_TYPE[kind], owner),
                action=action,
                text=dump(values),
                changes=changes,
                category=(kind, "create" if action == "create" else "delete"),
                person=(pid, "yaml"),
                actor=actor,
            )
        elif r < 0.90:  # join create / destroy (rows 8-9) or update (row 10)
            kind = rng.choice(("deal", "task", "ticket"))
            jid = self._join(kind, pid)
            _, owner, _ = self.joins[kind][-1]
            action = rng.choice(("create", "create", "destroy", "update"))
            if action == "update":
                data = {"role": ["viewer", "owner"]}
                changes = [{"field": "role", "from": "viewer", "to": "owner"}]
                person = (pid, "associated")
                verb, tag = "update", "mapper:join_update"
            else:
                values = {f"crm_{kind}_id": owner, "crm_person_id": pid, "role": "owner"}
                data = values
                changes = [
                    {
                        "field": k,
                        "from": None if action == "create" else v,
                        "to": v if action == "create" else None,
                    }
                    for k, v in values.items()
                ]
                person = (pid, "yaml")
                verb = "link" if action == "create" else "unlink"
                tag = "mapper:join_create" if action == "create" else "mapper:join_destroy"
            row_tag = {"link": "mapper:row8", "unlink": "mapper:row9", "update": "mapper:row10"}[
                verb
            ]
            self.add(
                (*tags, tag, row_tag),
                auditable=(JOIN_TYPE[kind], jid),
                associated=("Crm::Person", pid),
                action=action,
                text=dump(data),
                changes=changes,
                category=(kind, verb),
                person=person,
                actor=actor,
            )
        else:  # person create / destroy (rows 1, 3)
            action = rng.choice(("create", "destroy"))
            values = {**self._person_values(pid), "score": rng.randint(0, 100)}
            changes = [
                {
                    "field": k,
                    "from": None if action == "create" else v,
                    "to": v if action == "create" else None,
                }
                for k, v in values.items()
            ]
            self.add(
                (
                    *tags,
                    "mapper:row1" if action == "create" else "mapper:row3",
                    "contact:auditable",
                ),
                auditable=("Crm::Person", pid),
                action=action,
                text=dump(values),
                changes=changes,
                category=("contact", "create" if action == "create" else "delete"),
                person=(pid, "auditable"),
                actor=actor,
            )

    def fill(self, target: int, **kwargs: Any) -> None:
        """Generic audits until the Stage-0 COUNT of this CID is ``target``."""
        while self.count < target:
            self.generic(**kwargs)

    def no_person_deal_update(self, tags: tuple[str, ...] = ()) -> None:
        """A deal update naming no person anywhere (§4.3 steps 1-3 find nothing)."""
        deal = self.rng.choice(self.deals)
        self.add(
            (*tags, "contact:no_person"),
            auditable=("Crm::Deal", deal),
            action="update",
            text=dump({"name": ["a", "b"]}),
            changes=None,
            category=("deal", "update"),
            person=None,
            actor=self.main,
        )

    # --- profiles --------------------------------------------------------------------
    def full(self, role: str | None, target: int) -> None:
        """A full-profile CID: its role's case, then generic audits."""
        if role == "map_only":
            via_map = self.unmapped[:4] or [self._unmapped_audit_person()]
            for pid in via_map:
                self._map(pid)
            mapped_share = max(1, target // 20)
            for _ in range(target - mapped_share):
                self.generic(persons=via_map, tags=("cid:map_only",))
            self.fill(target, tags=("cid:map_only",))
            return
        for _ in range(ROLE_NOT_FOUND.get(role or "", 0)):
            self.no_person_deal_update(tags=(f"cid:{role}",))
        self.fill(target, tags=(f"cid:{role}",) if role else ())

    def _unmapped_audit_person(self) -> int:
        pid = self.world.next("crm_people")
        self.ds.crm_people.append(
            {
                "id": pid,
                "organization_id": self.cid,
                "full_name": "Tanpa Kontak",
                "email": None,
                "phone": None,
            }
        )
        return pid

    def stage1(self, target: int) -> None:
        """A stage1 CID: 1002 carries every record-level case, 1001 the clean subset (status
        changes, date-range edges, the common actors); generic audits up to ``target``."""
        self._status_cases()
        if self.cid == 1001:
            self._date_range_cases()
        else:
            self._yaml_cases()
            self._mapper_cases()
            self._actor_cases()
            self._contact_cases()
            self._timestamp_cases()
        self._out_of_scope_rows()
        self.fill(target, tags=("pii:names_emails_phones",))

    # --- stage1 cases -------------------------------------------------------------------
    def _person_update(
        self, tags, data, changes, *, pid=None, text=None, actor=None, failure=None, **kw
    ):
        pid = pid if pid is not None else self.rng.choice(self.mapped)
        self.add(
            tags,
            auditable=("Crm::Person", pid),
            action=kw.pop("action", "update"),
            text=text if text is not None else dump(data),
            changes=changes,
            category=kw.pop("category", ("contact", "update")),
            person=(pid, "auditable"),
            actor=actor or self.main,
            failure=failure,
            **kw,
        )

    def _deal_update(self, tags, text, changes, *, pid=None, **kw):
        pid = pid if pid is not None else self.rng.choice(self.mapped)
        self.add(
            tags,
            auditable=("Crm::Deal", self.rng.choice(self.deals)),
            associated=("Crm::Person", pid),
            action="update",
            text=text,
            changes=changes,
            category=kw.pop("category", ("deal", "update")),
            person=kw.pop("person", (pid, "associated")),
            actor=kw.pop("actor", self.main),
            **kw,
        )

    def _yaml_cases(self) -> None:
        pid = self.rng.choice(self.mapped)
        values = {
            **self._person_values(pid),
            "score": 42,
            "rating": 4.5,
            "vip": True,
            "nickname": None,
        }
        self._person_update(
            ("yaml:create_scalars", "mapper:row1"),
            values,
            [{"field": k, "from": None, "to": v} for k, v in values.items()],
            pid=pid,
            action="create",
            category=("contact", "create"),
        )
        data = {
            "full_name": ["Budi", "Budi Santoso"],
            "score": [1, 2],
            "rating": [1.5, 2.25],
            "vip": [False, True],
            "nickname": [None, "Bud"],
        }
        self._person_update(
            ("yaml:update_scalars", "mapper:row2"),
            data,
            [{"field": k, "from": v[0], "to": v[1]} for k, v in data.items()],
        )
        pid = self.rng.choice(self.mapped)
        values = {
            **self._person_values(pid),
            "score": 7,
            "rating": 0.5,
            "vip": False,
            "nickname": None,
        }
        self._person_update(
            ("yaml:destroy_scalars", "mapper:row3"),
            values,
            [{"field": k, "from": v, "to": None} for k, v in values.items()],
            pid=pid,
            action="destroy",
            category=("contact", "delete"),
        )
        data = {"tags": [["vip", "lead"], ["vip", "lead", "hot"]]}
        self._person_update(
            ("yaml:update_array",),
            data,
            [{"field": "tags", "from": ["vip", "lead"], "to": ["vip", "lead", "hot"]}],
        )
        data = {"tags": ["vip", "lead"]}
        self._person_update(
            ("yaml:create_two_element_array", "mapper:row1"),
            data,
            [{"field": "tags", "from": None, "to": ["vip", "lead"]}],
            action="create",
            category=("contact", "create"),
        )
        self._person_update(
            ("yaml:json_text",),
            None,
            [
                {"field": "full_name", "from": "Ani", "to": "Ani Wijaya"},
                {"field": "score", "from": 3, "to": 4},
            ],
            text='{"full_name": ["Ani", "Ani Wijaya"], "score": [3, 4]}',
        )
        self._deal_update(
            ("yaml:bigdecimal",),
            "---\namount:\n- !ruby/object:BigDecimal 18:0.15e4\n"
            "- !ruby/object:BigDecimal 18:0.125e1\n",
            [{"field": "amount", "from": "1500", "to": "1.25"}],
        )
        self._deal_update(
            ("yaml:time_with_zone", "yaml:anchors_aliases"),
            "---\nclosed_at:\n"
            "- !ruby/object:ActiveSupport::TimeWithZone\n"
            "  utc: 2020-01-01 03:00:00.000000000 Z\n"
            "  zone: &1 !ruby/object:ActiveSupport::TimeZone\n"
            "    name: Asia/Jakarta\n"
            "  time: 2020-01-01 10:00:00.000000000 Z\n"
            "- !ruby/object:ActiveSupport::TimeWithZone\n"
            "  utc: 2020-01-02 03:30:00.000000000 Z\n"
            "  zone: *1\n"
            "  time: 2020-01-02 10:30:00.000000000 Z\n",
            [
                {
                    "field": "closed_at",
                    "from": "2020-01-01T03:00:00.000Z",
                    "to": "2020-01-02T03:30:00.000Z",
                }
            ],
        )
        task = self.rng.choice(self.tasks)
        pid = self.rng.choice(self.mapped)
        for tags, text, changes in (
            (
                ("yaml:date",),
                "---\ndue_date:\n- 2020-01-01\n- 2020-02-01\n",
                [{"field": "due_date", "from": "2020-01-01", "to": "2020-02-01"}],
            ),
            (
                ("yaml:time_offset",),
                "---\nreminded_at:\n- 2020-01-01 10:00:00 +07:00\n"
                "- 2020-01-01 10:00:00.000000000 Z\n",
                [
                    {
                        "field": "reminded_at",
                        "from": "2020-01-01T03:00:00.000Z",
                        "to": "2020-01-01T10:00:00.000Z",
                    }
                ],
            ),
        ):
            self.add(
                tags,
                auditable=("Crm::Task", task),
                associated=("Crm::Person", pid),
                action="update",
                text=text,
                changes=changes,
                category=("task", "update"),
                person=(pid, "associated"),
                actor=self.main,
            )
        ticket = self.rng.choice(self.tickets)
        for tags, text, changes in (
            (
                ("yaml:hash_with_indifferent_access",),
                "---\ncustom_fields:\n"
                "- !ruby/hash:ActiveSupport::HashWithIndifferentAccess\n"
                "  priority: low\n  channel: email\n"
                "- !ruby/hash:ActiveSupport::HashWithIndifferentAccess\n"
                "  priority: high\n  channel: email\n",
                [
                    {
                        "field": "custom_fields",
                        "from": {"priority": "low", "channel": "email"},
                        "to": {"priority": "high", "channel": "email"},
                    }
                ],
            ),
            (
                ("yaml:symbols",),
                "---\nsource:\n- :web\n- :whatsapp\n",
                [{"field": "source", "from": "web", "to": "whatsapp"}],
            ),
        ):
            self.add(
                (*tags, "contact:comment_digit_string"),
                auditable=("Crm::Ticket", ticket),
                comment=json.dumps({"crm_person_id": str(pid)}),
                action="update",
                text=text,
                changes=changes,
                category=("ticket", "update"),
                person=(pid, "comment"),
                actor=self.main,
            )
        self._deal_update(
            ("yaml:unknown_ruby_object",),
            "---\nprice:\n- !ruby/object:Money\n  cents: 150000\n  currency_iso: IDR\n"
            "- !ruby/object:Money\n  cents: 175000\n  currency_iso: IDR\n",
            [
                {
                    "field": "price",
                    "from": {"cents": 150000, "currency_iso": "IDR"},
                    "to": {"cents": 175000, "currency_iso": "IDR"},
                }
            ],
        )
        self._person_update(
            ("yaml:anchors_aliases",),
            None,
            [{"field": "labels", "from": ["a", "b"], "to": ["a", "b"]}],
            text="---\nlabels:\n- &1\n  - a\n  - b\n- *1\n",
        )
        old = "Pelanggan setia sejak 2019.\nTerima kasih 🙏 — ĉ ünïcödé"
        new = "Pelanggan setia sejak 2019.\nBaris kedua 😀\n\tdengan tab"
        self.ds.pii.extend((old, new))
        self._person_update(
            ("yaml:multiline_unicode_emoji",),
            {"description": [old, new]},
            [{"field": "description", "from": old, "to": new}],
        )
        self._person_update(
            ("yaml:binary",),
            None,
            [{"field": "avatar_name", "from": "Budi", "to": "//79"}],
            text="---\navatar_name:\n- !binary |-\n  QnVkaQ==\n- !binary |-\n  //79\n",
        )
        self._person_update(("yaml:empty_map",), None, [], text="--- {}\n")
        levels = ["a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
        for n in range(1, 13):
            prev = chr(ord("a") + n - 1)
            name = chr(ord("a") + n)
            levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
        bomb = "---\n" + "\n".join(levels) + "\n"
        head = "---\nnote:\n- a\n- "
        oversize = head + "x" * (MAX_BYTES + 1 - len(head) - 1) + "\n"
        assert len(oversize.encode()) == MAX_BYTES + 1
        for tag, text in (
            ("yaml:alias_bomb", bomb),
            ("yaml:oversize", oversize),
            ("yaml:malformed", "---\nfull_name: [unclosed\n  - {\n"),
            ("yaml:non_map_root", "---\n- a\n- b\n"),
            ("yaml:update_not_pair", "---\nfull_name: Budi\n"),
        ):
            self._person_update((tag,), None, None, text=text, failure="invalid_audited_changes")

    def _status_cases(self) -> None:
        """§4.2 rows 5-7: a status change to an id of CONFIGURED_ID_SETS (update with the
        id-sets empty, won/completed/resolved when configured), and a create carrying a won
        stage (always create)."""
        pid = self.rng.choice(self.mapped)
        for kind, row in (("deal", 5), ("task", 6), ("ticket", 7)):
            owner = self.rng.choice(
                {"deal": self.deals, "task": self.tasks, "ticket": self.tickets}[kind]
            )
            key = STATUS_KEY[kind]
            new = CONFIGURED_ID_SETS[
                {
                    "deal": "won_stage_ids",
                    "task": "done_task_status_ids",
                    "ticket": "resolved_ticket_status_ids",
                }[kind]
            ][0]
            self.add(
                ("mapper:status_change", f"mapper:row{row}", "mapper:row10"),
                auditable=(OWNER_TYPE[kind], owner),
                associated=("Crm::Person", pid),
                action="update",
                text=dump({key: [1, new]}),
                changes=[{"field": key, "from": 1, "to": new}],
                category=(kind, "update"),
                configured=CONFIGURED_VERB[kind],
                person=(pid, "associated"),
                actor=self.main,
            )
        deal = self.rng.choice(self.deals)
        values = {"name": f"Deal {deal}", "crm_stage_id": 7, "crm_person_id": pid}
        self.add(
            ("mapper:create_with_won_stage", "mapper:row4"),
            auditable=("Crm::Deal", deal),
            action="create",
            text=dump(values),
            changes=[{"field": k, "from": None, "to": v} for k, v in values.items()],
            category=("deal", "create"),
            person=(pid, "yaml"),
            actor=self.main,
        )

    def _mapper_cases(self) -> None:
        pid = self.rng.choice(self.mapped)
        self._person_update(
            ("mapper:unknown_action", "mapper:row11"),
            {"full_name": ["a", "b"]},
            None,
            pid=pid,
            action="touch",
            failure="unmapped_action_type",
        )

    def _out_of_scope_rows(self) -> None:
        """Crm::Company and User audits that name the CID's rows: never extracted."""
        pid = self.rng.choice(self.mapped)
        for _ in range(3):
            self.add(
                ("mapper:out_of_scope_type",),
                auditable=("Crm::Company", self.rng.choice(self.companies)),
                associated=("Crm::Person", pid),
                action="update",
                text=dump({"name": ["PT A", "PT B"]}),
                changes=None,
                category=None,
                person=None,
                actor=self.main,
            )
        self.add(
            ("mapper:out_of_scope_type",),
            auditable=("User", self.org.users[0]["id"]),
            action="update",
            text=dump({"sign_in_count": [1, 2]}),
            changes=None,
            category=None,
            person=None,
            actor=self.main,
        )

    def _actor_cases(self) -> None:
        main_email = next(u["email"] for u in self.ds.users if u["id"] == self.main.user_id)
        variant = self._user("variant", sso=False, email=f"  {main_email.upper()} ")
        other_company = self._other_company()
        actors = {
            "actor:A1": Actor(None, "A1"),
            "actor:email_null": self._user("no-email", sso=False, email=None),
            "actor:usman_empty": self._user("unknown", sso=False),
            "actor:deactivated_empty": self._user("gone", sso=False, deleted=True),
            "actor:deactivated_with_sso": self._user("gone-sso", sso=True, deleted=True),
            "actor:A4": Actor(MISSING_USER_BASE + self.cid, "A4"),
            "actor:email_variant": Actor(variant.user_id, "A2", self.main.sso_id),
            "actor:email_in_other_company": self._user(
                "elsewhere", sso=True, sso_company=other_company
            ),
        }
        for tag, actor in actors.items():
            extra = {
                "A1": ("actor:A1",),
                "A2": ("actor:A2",),
                "A3": ("actor:A3",),
                "A4": ("actor:A4",),
            }[actor.case]
            if tag == "actor:deactivated_with_sso":
                extra = (*extra, "actor:deleted_at_resolved")
            pid = self.rng.choice(self.mapped)
            data = {"score": [1, 2]}
            self._person_update(
                (tag, *extra),
                data,
                [{"field": "score", "from": 1, "to": 2}],
                pid=pid,
                actor=actor,
            )

    def _other_company(self) -> str:
        """Another stage1 organization's company (the same email known there only)."""
        others = [o["company_sso_id"] for o in self.ds.organizations if o["id"] != self.cid]
        return others[0]

    def _contact_cases(self) -> None:
        p1, p2, p3 = self.rng.sample(self.mapped, 3)
        deal = self.rng.choice(self.deals)

        def deal_audit(tags, person, **kw):
            self.add(
                tags,
                auditable=("Crm::Deal", deal),
                action=kw.pop("action", "update"),
                text=kw.pop("text"),
                changes=kw.pop("changes"),
                category=kw.pop("category", ("deal", "update")),
                person=person,
                actor=self.main,
                **kw,
            )

        deal_audit(
            ("contact:comment_and_yaml_differ",),
            (p2, "comment"),
            associated=("Crm::Person", p1),
            comment=json.dumps({"crm_person_id": p2, "source": "api"}),
            text=dump({"crm_person_id": [p1, p3]}),
            changes=[{"field": "crm_person_id", "from": p1, "to": p3}],
        )
        for tag, comment in (
            ("contact:malformed_comment", '{"crm_person_id": 12, '),
            ("contact:comment_without_key", json.dumps({"source": "import"})),
        ):
            deal_audit(
                (tag, "contact:associated"),
                (p1, "associated"),
                associated=("Crm::Person", p1),
                comment=comment,
                text=dump({"name": ["x", "y"]}),
                changes=[{"field": "name", "from": "x", "to": "y"}],
            )
        deal_audit(
            ("contact:yaml_to",),
            (p3, "yaml"),
            text=dump({"crm_person_id": [p1, p3]}),
            changes=[{"field": "crm_person_id", "from": p1, "to": p3}],
        )
        deal_audit(
            ("contact:yaml_from", "mapper:row4"),
            (p2, "yaml"),
            action="destroy",
            text=dump({"name": "Deal", "crm_person_id": p2}),
            changes=[
                {"field": "name", "from": "Deal", "to": None},
                {"field": "crm_person_id", "from": p2, "to": None},
            ],
            category=("deal", "delete"),
        )
        map_hit, double_miss = self.unmapped[:2]
        self._map(map_hit)
        for tags, pid in (
            (("contact:map_hit",), map_hit),
            (("contact:double_miss", "contact:source_id_other_company_only"), double_miss),
            (("contact:double_miss", "contact:source_id_other_company_only"), double_miss),
        ):
            self._person_update(
                tags, {"score": [3, 4]}, [{"field": "score", "from": 3, "to": 4}], pid=pid
            )
        duplicate = self._person_with_duplicate_contacts()
        for _ in range(2):
            self._person_update(
                ("contact:duplicate_contacts",),
                {"score": [5, 6]},
                [{"field": "score", "from": 5, "to": 6}],
                pid=duplicate,
            )

    def _timestamp_cases(self) -> None:
        self._person_update(
            ("extraction:infinite_created_at",),
            {"score": [1, 2]},
            [{"field": "score", "from": 1, "to": 2}],
            created_at="infinity",
        )
        self._person_update(
            ("extraction:null_created_at",),
            {"score": [2, 3]},
            [{"field": "score", "from": 2, "to": 3}],
            created_at="null",
        )
        for hours in (7, 8, 9):
            stamp = self._tick().replace(tzinfo=_tz(hours)) + timedelta(hours=hours)
            self._person_update(
                ("extraction:aware_timestamp",),
                {"score": [0, hours]},
                [{"field": "score", "from": 0, "to": hours}],
                created_at=stamp,
            )

    def _date_range_cases(self) -> None:
        for tag, delta in (
            ("extraction:before_date_range_start", -1),
            ("extraction:at_date_range_start", 0),
            ("extraction:after_date_range_start", 1),
        ):
            self._person_update(
                (tag,),
                {"score": [delta + 1, delta + 2]},
                [{"field": "score", "from": delta + 1, "to": delta + 2}],
                created_at=DATE_RANGE_START + timedelta(seconds=delta),
            )


def _global_rows(world: _World, orgs: list[_OrgBuilder]) -> None:
    """Audits no CID owns ([N1] unattributable): hard-deleted persons and join rows."""
    rng = random.Random(f"{world.seed}:{world.profile}:unattributable")
    for n in range(3):
        stamp = datetime(2020 + n, 3, 4, 5, 6, 7)
        deleted = DELETED_ROW_BASE + n
        join = n == 2
        row = {
            "id": None,
            "auditable_id": deleted,
            "auditable_type": "Crm::DealPerson" if join else "Crm::Person",
            "associated_id": DELETED_ROW_BASE + 100 + n if join else None,
            "associated_type": "Crm::Person" if join else None,
            "user_id": None,
            "user_type": None,
            "username": None,
            "action": "destroy",
            "audited_changes": dump({"crm_person_id": DELETED_ROW_BASE + 100 + n}),
            "version": 2,
            "comment": None,
            "remote_address": None,
            "request_uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "created_at": stamp,
        }
        world.add(row, ("extraction:unattributable",), {"outcome": "not_extracted"}, None)


# --- perf ------------------------------------------------------------------------------------


@dataclass
class PerfAudits:
    """The perf profile's audits, generated lazily (``rows()``) for COPY: ``PERF_AUDITS``
    person/deal audits of ``PERF_CID`` interleaved with ``PERF_FILLER_AUDITS`` of the filler
    CID (every third id), so the page query must skip other-CID rows by index."""

    seed: int
    persons: dict[int, list[int]]  # cid → crm_people ids (all with a contact)
    deals: dict[int, list[int]]
    users: dict[int, int]  # cid → the acting user id
    counts: dict[int, int] = field(
        default_factory=lambda: {PERF_CID: PERF_AUDITS, PERF_FILLER_CID: PERF_FILLER_AUDITS}
    )

    @classmethod
    def build(cls, world: _World, orgs: list[_OrgBuilder]) -> PerfAudits:
        """Add the perf CIDs' persons (with contacts), deals' users and sso rows."""
        ds = world.ds
        persons: dict[int, list[int]] = {}
        users: dict[int, int] = {}
        deals: dict[int, list[int]] = {}
        for org in orgs:
            size = PERF_PERSONS if org.cid == PERF_CID else PERF_FILLER_PERSONS
            ids = []
            for n in range(size):
                pid = world.next("crm_people")
                ids.append(pid)
                ds.crm_people.append(
                    {
                        "id": pid,
                        "organization_id": org.cid,
                        "full_name": f"Perf Person {n}",
                        "email": None,
                        "phone": None,
                    }
                )
                ds.contacts.append(
                    {
                        "_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{world.seed}/perf/{pid}")),
                        "company_sso_id": org.company_sso_id,
                        "name": f"Perf Person {n}",
                        "crm_data": {"id": str(pid)},
                        "source": "crm",
                        "source_id": str(pid),
                        "created_at": datetime(2020, 1, 1, tzinfo=UTC),
                    }
                )
            persons[org.cid] = ids
            deals[org.cid] = list(org.entities["crm_deals"])
            uid = world.next("users")
            email = f"perf.user.{uid}@org{org.cid}.co.id"
            ds.users.append(
                {
                    "id": uid,
                    "organization_id": org.cid,
                    "full_name": f"Perf User {org.cid}",
                    "email": email,
                    "deleted_at": None,
                }
            )
            ds.sso_users.append(
                {
                    "company_sso_id": org.company_sso_id,
                    "email": email,
                    "sso_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{world.seed}/perf-sso/{uid}")),
                }
            )
            users[org.cid] = uid
        return cls(world.seed, persons, deals, users)

    @property
    def total(self) -> int:
        """Audit rows the stream yields."""
        return sum(self.counts.values())

    START = datetime(2019, 1, 1)
    STEP = timedelta(seconds=90)

    def _cids(self) -> Iterator[int]:
        """The owning CID of each row, in id order (every third row the filler's)."""
        left = dict(self.counts)
        n = 0
        while left[PERF_CID] or left[PERF_FILLER_CID]:
            cid = PERF_FILLER_CID if (n % 3 == 2 and left[PERF_FILLER_CID]) else PERF_CID
            if not left[cid]:
                cid = PERF_FILLER_CID if cid == PERF_CID else PERF_CID
            left[cid] -= 1
            yield cid
            n += 1

    def since(self, start: datetime) -> dict[int, int]:
        """Audits per CID created at or after ``start``."""
        first = max(0, math.ceil((start - self.START) / self.STEP))
        counts = {cid: 0 for cid in self.counts}
        for n, cid in enumerate(self._cids()):
            counts[cid] += n >= first
        return counts

    def rows(self) -> Iterator[tuple]:
        """Every audit row as a tuple in ``AUDIT_COLUMNS`` order (created_at naive UTC)."""
        audit_id = PERF_AUDIT_ID_BASE
        for n, cid in enumerate(self._cids()):
            persons = self.persons[cid]
            pid = persons[n % len(persons)]
            stamp = self.START + n * self.STEP
            if n % 4 == 3:
                deal = self.deals[cid][n % len(self.deals[cid])]
                row = (
                    audit_id, deal, "Crm::Deal", pid, "Crm::Person", self.users[cid], "User",
                    None, "update", f"---\nname:\n- Deal {n}\n- Deal {n} baru\n"
                    "crm_stage_id:\n- 1\n- 2\n",
                    2, None, None, None, stamp,
                )  # fmt: skip
            else:
                row = (
                    audit_id, pid, "Crm::Person", None, None, self.users[cid], "User", None,
                    "update", f"---\nscore:\n- {n % 97}\n- {n % 89}\nvip:\n- false\n- true\n",
                    3, None, None, None, stamp,
                )  # fmt: skip
            yield row
            audit_id += 1

    def fingerprint(self) -> str:
        """sha256 of the parameters and the first 1,000 rows (the rest follows from them)."""
        digest = hashlib.sha256(json.dumps([self.counts, self.seed], default=str).encode())
        for i, row in enumerate(self.rows()):
            if i >= 1000:
                break
            digest.update(json.dumps(row, default=str).encode())
        return digest.hexdigest()
