"""Pure, seeded synthetic CRM dataset: ``build_dataset(profile, seed)`` (no I/O).

The same (profile, seed) always yields an identical dataset; another seed yields
another one. Attachment rows carry a storage ``key``; the writer turns it into a
``file_url``.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from itertools import accumulate

from devtools.synthetic import content
from devtools.synthetic.audits import AUDIT_TABLES, PerfAudits, build_audits
from devtools.synthetic.files import FILE_TYPES, make_file

PROFILES = ("stage1", "full", "perf", "large", "large-plain")
#: the profiles tests and the demo use; ``perf`` (≥ 1M audits) and the ``large`` ones
#: (200,000 notes) are generated only when asked
TEST_PROFILES = ("stage1", "full")
NAMESPACE = uuid.UUID("0f6c1b8e-3d2a-4c57-9a61-5e0d7c2b9f14")
NOTE_TYPES = {
    1: "Notes",
    2: "Calls",
    3: "Emails",
    4: "Meetings",
    5: "WhatsApp",
    6: "Documents",
    7: "SMS",
}
NOTE_TYPE_WEIGHTS = {1: 38, 6: 17, 2: 12, 3: 9, 4: 10, 5: 9, 7: 5}
DEFAULT_ALLOWED_NOTE_TYPES = frozenset({1, 6})
FK_SHAPES = {
    "person": 72,
    "person+deal": 8,
    "person+company": 4,
    "deal": 7,
    "company": 5,
    "ticket": 4,
}
NON_PERSON_SHAPES = ("deal", "company", "ticket")
STI_TYPES = {
    "person": ("Crm::PersonNote",),
    "person+deal": ("Crm::PersonNote", "Crm::DealNote"),
    "person+company": ("Crm::PersonNote", "Crm::CompanyNote"),
    "deal": ("Crm::DealNote",),
    "company": ("Crm::CompanyNote",),
    "ticket": ("Crm::TicketNote",),
}
OFFSET_HOURS = {7: 60, 8: 25, 9: 15}  # WIB, WITA, WIT
FILE_NAMES = {
    "png": ("foto_kunjungan.png", "bukti_transfer.png", "screenshot_chat.png"),
    "jpeg": ("foto_toko.jpg", "kartu_nama.jpeg"),
    "mp3": ("rekaman_panggilan.mp3", "voice_note.mp3"),
    "m4a": ("pesan_suara.m4a",),
    "pdf": ("penawaran_harga.pdf", "invoice.pdf"),
    "xlsx": ("daftar_produk.xlsx",),
    "docx": ("kontrak_kerja_sama.docx",),
    "csv": ("data_kontak.csv",),
}
# Id ranges start at 10,000,001 so they never meet hand-built test fixtures (cid * 1000 + n).
ID_BASES = {
    "users": 10_000_001,
    "crm_people": 20_000_001,
    "crm_companies": 30_000_001,
    "crm_deals": 31_000_001,
    "crm_tickets": 32_000_001,
    "crm_notes": 50_000_001,
    "assets": 60_000_001,
    "crm_note_attachments": 70_000_001,
    "crm_checkins": 80_000_001,
}
DANGLING_CREATOR_BASE = 99_000_001
TABLES = (
    "organizations",
    "users",
    "crm_people",
    "crm_companies",
    "crm_deals",
    "crm_tickets",
    "crm_note_types",
    "crm_notes",
    "assets",
    "crm_note_attachments",
    "crm_checkins",
)
FAILURE_TAGS = ("unmapped_person", "empty", "too_long", "invalid_timestamp")
# Forced per CID (>= 50 notes) on in-scope, ready notes so every case is exercised.
FORCED_FRAGMENTS = tuple(content.EXTRA_FRAGMENTS) + ("list", "bold_italic", "unicode", "plain_text")
FORCED_FILES = (
    ("png", "jpeg", "pdf"),
    ("mp3", "m4a"),
    ("mp3", "mp3"),
    ("xlsx",),
    ("docx",),
    ("csv",),
    ("pdf",),
    ("m4a",),
)
EPOCH_START = datetime(2019, 1, 1, tzinfo=UTC)
EPOCH_SPAN_S = int((datetime(2024, 12, 31, tzinfo=UTC) - EPOCH_START).total_seconds())
STAGE1_SIZES = ((1001, 100), (1002, 5000))
FULL_LARGE = (3000, 2200, 1500)
FULL_MEDIUM = (700, 600, 520, 450, 380, 320, 260)
FULL_SMALL_COUNT = 120
FULL_TOTAL = 21_000
FULL_FIRST_CID = 2001
FULL_COMPANY_ONLY_CID = 2130  # a small CID with no person notes at all
PERF_SIZES = ((3001, 20), (3002, 20))  # perf: few notes; its audits are the point
#: large: one CID with the ``full`` profile's mix of notes and attachments; large-plain: the
#: same mix without any attachment (benchmarks/scale.py). ``notes=`` resizes the CID.
LARGE_CIDS = {"large": 4001, "large-plain": 4002}
LARGE_NOTES = 200_000


@dataclass(frozen=True)
class StoredObject:
    """One attachment object: storage key, bytes and content type."""

    key: str
    data: bytes
    content_type: str


@dataclass
class Dataset:
    """All rows of one synthetic CRM world: CRM tables, identity rows, CDP contacts, objects."""

    profile: str
    seed: int
    organizations: list[dict] = field(default_factory=list)
    users: list[dict] = field(default_factory=list)
    crm_people: list[dict] = field(default_factory=list)
    crm_companies: list[dict] = field(default_factory=list)
    crm_deals: list[dict] = field(default_factory=list)
    crm_tickets: list[dict] = field(default_factory=list)
    crm_note_types: list[dict] = field(default_factory=list)
    crm_notes: list[dict] = field(default_factory=list)
    assets: list[dict] = field(default_factory=list)  # "key" instead of "file_url"
    crm_note_attachments: list[dict] = field(default_factory=list)  # "key" too
    crm_checkins: list[dict] = field(default_factory=list)
    sso_users: list[dict] = field(default_factory=list)
    contacts: list[dict] = field(default_factory=list)
    objects: dict[str, StoredObject] = field(default_factory=dict)
    note_tags: dict[int, tuple[str, ...]] = field(default_factory=dict)
    # activity logs (devtools/synthetic/audits.py, SPEC-activity-logs §16)
    crm_tasks: list[dict] = field(default_factory=list)
    crm_deal_people: list[dict] = field(default_factory=list)
    crm_task_people: list[dict] = field(default_factory=list)
    crm_ticket_people: list[dict] = field(default_factory=list)
    audits: list[dict] = field(default_factory=list)
    contact_id_map: list[dict] = field(default_factory=list)  # CDP crm_contact_id_map
    audit_tags: dict[int, tuple[str, ...]] = field(default_factory=dict)  # audit id → cases
    audit_expected: dict[int, dict] = field(default_factory=dict)  # audit id → its plan
    audit_cids: dict[int, int | None] = field(default_factory=dict)  # owner by [N1]
    audit_stream: PerfAudits | None = None  # perf only: audits generated lazily
    pii: list[str] = field(default_factory=list)  # names, emails, phones, texts in audits

    def table(self, name: str) -> list[dict]:
        """Rows of one CRM table by name (the notes' ``TABLES`` or ``AUDIT_TABLES``)."""
        if name not in TABLES and name not in AUDIT_TABLES:
            raise KeyError(name)
        return getattr(self, name)

    def audit_count(self) -> int:
        """Rows of ``audits`` (streamed ones included)."""
        return len(self.audits) + (self.audit_stream.total if self.audit_stream else 0)

    def company_sso_ids(self) -> list[str]:
        """company_sso_id of every organization plus their decoy tenants."""
        ids = [org["company_sso_id"] for org in self.organizations]
        return ids + [decoy_company_sso_id(i) for i in ids]

    def summary(self, allowed_note_types=DEFAULT_ALLOWED_NOTE_TYPES) -> dict:
        """Counts per profile and per CID (see ``summary.summarize``)."""
        from devtools.synthetic.summary import summarize

        return summarize(self, allowed_note_types)

    def fingerprint(self) -> str:
        """Stable sha256 over every row, contact, identity row, tag and object byte."""
        digest = hashlib.sha256()
        for name in (*TABLES, "sso_users", "contacts"):
            digest.update(_canonical({name: getattr(self, name)}))
        digest.update(_canonical({"tags": sorted(self.note_tags.items())}))
        for name in (*AUDIT_TABLES, "contact_id_map"):
            digest.update(_canonical({name: getattr(self, name)}))
        digest.update(_canonical({"audit_tags": sorted(self.audit_tags.items())}))
        digest.update(_canonical({"audit_expected": sorted(self.audit_expected.items())}))
        if self.audit_stream is not None:
            digest.update(self.audit_stream.fingerprint().encode())
        for key in sorted(self.objects):
            obj = self.objects[key]
            digest.update(_canonical([key, obj.content_type]))
            digest.update(hashlib.sha256(obj.data).digest())
        return digest.hexdigest()


def _canonical(value) -> bytes:
    """Canonical JSON bytes (datetimes/Decimals via ``str``)."""
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8")


def decoy_company_sso_id(company_sso_id: str) -> str:
    """Another tenant that holds contacts with the same crm_data.id as unmapped persons."""
    return str(uuid.uuid5(NAMESPACE, f"decoy/{company_sso_id}"))


def profile_sizes(profile: str, notes: int | None = None) -> list[tuple[int, int]]:
    """(CID, total notes) for each organization of a profile (independent of the seed).

    ``notes`` sets the size of a ``large`` profile's single CID (default ``LARGE_NOTES``);
    the other profiles have fixed sizes and refuse it.
    """
    if profile in LARGE_CIDS:
        if notes is not None and notes < 1:
            raise ValueError(f"notes must be >= 1, got {notes}")
        return [(LARGE_CIDS[profile], LARGE_NOTES if notes is None else notes)]
    if notes is not None:
        raise ValueError(f"profile {profile!r} has fixed sizes; notes= is for {list(LARGE_CIDS)}")
    if profile == "stage1":
        return list(STAGE1_SIZES)
    if profile == "perf":
        return list(PERF_SIZES)
    if profile != "full":
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    rng = random.Random("full-profile-sizes")
    small = [rng.randint(10, 150) for _ in range(FULL_SMALL_COUNT)]
    _rebalance(small, FULL_TOTAL - sum(FULL_LARGE) - sum(FULL_MEDIUM), 10, 150)
    sizes = list(FULL_LARGE) + list(FULL_MEDIUM) + small
    return [(FULL_FIRST_CID + i, n) for i, n in enumerate(sizes)]


def synthetic_cids() -> set[int]:
    """Every CID any profile generates (what ``seed`` replaces)."""
    return {cid for profile in PROFILES for cid, _ in profile_sizes(profile)}


def _rebalance(values: list[int], total: int, low: int, high: int) -> None:
    """Nudge ``values`` by one at a time (within bounds) until they sum to ``total``."""
    i = 0
    while sum(values) != total:
        step = 1 if sum(values) < total else -1
        if low <= values[i % len(values)] + step <= high:
            values[i % len(values)] += step
        i += 1


def build_dataset(profile: str, seed: int = 42, notes: int | None = None) -> Dataset:
    """Build the synthetic dataset of ``profile`` (one of ``PROFILES``) from ``seed``:
    each organization's notes, then (``audits.build_audits``) the activity-log tables.

    The ``large`` profiles have no audits; ``notes`` resizes their CID (``profile_sizes``).
    """
    ds = Dataset(profile=profile, seed=seed)
    ds.crm_note_types = [{"id": k, "name": v} for k, v in NOTE_TYPES.items()]
    ids = _Ids()
    orgs = []
    for cid, n_notes in profile_sizes(profile, notes):
        org = _OrgBuilder(ds, ids, seed, profile, cid, n_notes)
        org.build()
        orgs.append(org)
    if profile not in LARGE_CIDS:
        build_audits(ds, orgs)
    return ds


class _Ids:
    """Global id sequences per table."""

    def __init__(self) -> None:
        self._next = dict(ID_BASES)

    def next(self, table: str) -> int:
        """The next id of ``table``."""
        value = self._next[table]
        self._next[table] = value + 1
        return value


@dataclass
class _Plan:
    """What one note will look like, before rendering."""

    id: int
    shape: str
    note_type: int
    person: int | None = None
    company: int | None = None
    deal: int | None = None
    ticket: int | None = None
    creator: int | None = None
    created: datetime | None = None
    updated: datetime | None = None
    fragments: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    checkin: bool = False
    content_kind: str = "normal"  # normal | empty | too_long | long_ok
    tags: set[str] = field(default_factory=set)

    def in_scope(self) -> bool:
        """Person note of a default-allowed note type."""
        return self.person is not None and self.note_type in DEFAULT_ALLOWED_NOTE_TYPES

    def ready(self) -> bool:
        """In scope and not carrying a planned failure or special content."""
        return (
            self.in_scope()
            and not self.tags & set(FAILURE_TAGS)
            and (self.content_kind == "normal")
        )


class _OrgBuilder:
    """Builds every row of one organization (CID) into the dataset."""

    def __init__(
        self, ds: Dataset, ids: _Ids, seed: int, profile: str, cid: int, n_notes: int
    ) -> None:
        self.ds, self.ids, self.cid, self.n_notes = ds, ids, cid, n_notes
        self.rng = random.Random(f"{seed}:{profile}:{cid}")
        self.seed = seed
        self.company_sso_id = str(uuid.uuid5(NAMESPACE, f"{seed}/org/{cid}"))
        self.domain = f"org{cid}.co.id"
        self.person_notes = not (profile == "full" and cid == FULL_COMPANY_ONLY_CID)
        self.attachments = profile != "large-plain"
        self.users: list[dict] = []
        self.creator_weights: list[float] = []
        self.people: list[int] = []
        self.person_names: dict[int, str] = {}
        self.entities: dict[str, list[int]] = {}
        self.unmapped: set[int] = set()

    def build(self) -> None:
        """Generate and append all rows of the organization."""
        rng = self.rng
        self.ds.organizations.append(
            {
                "id": self.cid,
                "name": f"{content.company_name(rng)} ({self.cid})",
                "company_sso_id": self.company_sso_id,
            }
        )
        self._users()
        self._people_and_entities()
        plans = [self._plan(i, shape, nt) for i, (shape, nt) in enumerate(self._shapes_types())]
        self._pick_unmapped(plans)
        self._assign_edges(plans)
        if self.n_notes >= 50:
            self._force_coverage(plans)
        for plan in plans:
            self._render(plan)
        self._contacts()

    # --- people ---------------------------------------------------------------

    def _users(self) -> None:
        """CRM users (some deactivated, one without e-mail) and their identity rows."""
        rng = self.rng
        n = min(40, max(5, 5 + self.n_notes // 80))
        for i in range(n):
            name = content.person_name(rng)
            uid = self.ids.next("users")
            deactivated = rng.random() < 0.12 or i == n - 1
            email = None if (n >= 10 and i == 1) else content.email_for(name, uid, self.domain)
            deleted_at = (
                (EPOCH_START + timedelta(days=rng.randint(400, 2000))).astimezone(_tz(7))
                if deactivated
                else None
            )
            self.users.append(
                {
                    "id": uid,
                    "organization_id": self.cid,
                    "full_name": name,
                    "email": email,
                    "deleted_at": deleted_at,
                }
            )
            known = bool(email) and self._has_identity(i, deactivated)
            if known:
                sso_id = str(uuid.uuid5(NAMESPACE, f"{self.seed}/sso/{uid}"))
                self.ds.sso_users.append(
                    {"company_sso_id": self.company_sso_id, "email": email, "sso_id": sso_id}
                )
            # Mapped, active users write most notes.
            self.creator_weights.append((1.0 if known else 0.2) * (0.4 if deactivated else 1.0))
        self.ds.users.extend(self.users)

    def _has_identity(self, i: int, deactivated: bool) -> bool:
        """Whether a user is known to the identity directory (user #2 never is)."""
        if i == 2:
            return False
        return self.rng.random() < (0.6 if deactivated else 0.9)

    def _people_and_entities(self) -> None:
        """crm_people, crm_companies, crm_deals and crm_tickets of the organization."""
        rng = self.rng
        for _ in range(max(3, self.n_notes // 4)):
            pid = self.ids.next("crm_people")
            name = content.person_name(rng)
            mail = content.email_for(name, pid, rng.choice(("gmail.com", "yahoo.co.id")))
            self.ds.crm_people.append(
                {
                    "id": pid,
                    "organization_id": self.cid,
                    "full_name": name,
                    "email": mail,
                    "phone": f"+62 8{rng.randint(11, 59)} {rng.randint(1000, 9999)} "
                    f"{rng.randint(1000, 9999)}",
                }
            )
            self.people.append(pid)
            self.person_names[pid] = name
        for table, prefix in (
            ("crm_companies", "PT"),
            ("crm_deals", "Deal"),
            ("crm_tickets", "Tiket"),
        ):
            rows = []
            for _ in range(max(2, self.n_notes // 40)):
                eid = self.ids.next(table)
                rows.append(
                    {
                        "id": eid,
                        "organization_id": self.cid,
                        "name": f"{prefix} {content.company_name(rng)} #{eid}",
                    }
                )
            getattr(self.ds, table).extend(rows)
            self.entities[table] = [r["id"] for r in rows]
        order = self.people[:]
        rng.shuffle(order)
        self.person_weights = [(pid, 1 / (rank + 1) ** 0.7) for rank, pid in enumerate(order)]
        # cumulative once per CID: the same draws as ``choices(people, weights)``, but
        # O(log persons) per note instead of O(persons) (50,000 persons in ``large``)
        self.person_pool = tuple(pid for pid, _ in self.person_weights)
        self.person_cum_weights = list(accumulate(w for _, w in self.person_weights))

    # --- note plans -------------------------------------------------------------

    def _shapes_types(self) -> list[tuple[str, int]]:
        """FK shape and note type per note; every shape and type forced in CIDs >= 50 notes."""
        rng, n = self.rng, self.n_notes
        shapes_w = {
            s: w for s, w in FK_SHAPES.items() if self.person_notes or s in NON_PERSON_SHAPES
        }
        forced_shapes = list(shapes_w) if n >= 50 else []
        forced_types = list(NOTE_TYPES) if n >= 50 else []
        shapes = forced_shapes + rng.choices(
            list(shapes_w), list(shapes_w.values()), k=n - len(forced_shapes)
        )
        types = forced_types + rng.choices(
            list(NOTE_TYPE_WEIGHTS), list(NOTE_TYPE_WEIGHTS.values()), k=n - len(forced_types)
        )
        rng.shuffle(shapes)
        rng.shuffle(types)
        return list(zip(shapes, types, strict=True))

    def _plan(self, index: int, shape: str, note_type: int) -> _Plan:
        """A random ordinary note plan."""
        rng = self.rng
        plan = _Plan(id=self.ids.next("crm_notes"), shape=shape, note_type=note_type)
        if shape.startswith("person"):
            plan.person = rng.choices(self.person_pool, cum_weights=self.person_cum_weights)[0]
        for part, table in (
            ("deal", "crm_deals"),
            ("company", "crm_companies"),
            ("ticket", "crm_tickets"),
        ):
            if part in shape:
                setattr(plan, part, rng.choice(self.entities[table]))
        plan.creator = self._creator()
        plan.created, plan.updated = _timestamps(rng)
        plan.fragments = content.pick_fragments(rng)
        plan.files = _pick_files(rng)
        plan.checkin = rng.random() < 0.05
        return plan

    def _creator(self) -> int | None:
        """A creator id: mostly a CRM user, sometimes null or a nonexistent user."""
        r = self.rng.random()
        if r < 0.015:
            return None
        if r < 0.025:
            return DANGLING_CREATOR_BASE + self.rng.randrange(1000)
        return self.rng.choices(self.users, self.creator_weights)[0]["id"]

    def _pick_unmapped(self, plans: list[_Plan]) -> None:
        """~0.5 % of persons with notes get no CDP contact, within 0.4 % of in-scope notes."""
        in_scope: dict[int, int] = {}
        for plan in plans:
            if plan.in_scope():
                in_scope[plan.person] = in_scope.get(plan.person, 0) + 1
        budget = sum(in_scope.values()) * 4 // 1000
        with_notes = {p.person for p in plans if p.person is not None}
        want = max(1, round(len(with_notes) * 0.005))
        candidates = sorted(in_scope)
        self.rng.shuffle(candidates)
        for pid in candidates:
            if len(self.unmapped) >= want or budget <= 0:
                break
            if in_scope[pid] <= budget:
                self.unmapped.add(pid)
                budget -= in_scope[pid]
        for plan in plans:
            if plan.person in self.unmapped:
                plan.tags.add("unmapped_person")

    def _assign_edges(self, plans: list[_Plan]) -> None:
        """Empty, too-long and invalid-timestamp notes, disjoint, within 0.7 % of in-scope."""
        in_scope = [p for p in plans if p.in_scope()]
        n = len(in_scope)
        unmapped = sum(1 for p in in_scope if "unmapped_person" in p.tags)
        budget = n * 7 // 1000 - unmapped if n >= 700 else 0
        wanted = [
            ("empty", max(1, n // 700)),
            ("invalid_timestamp", max(1, n // 1000)),
            ("too_long", max(1, n // 2000)),
        ]
        pool = [p for p in in_scope if p.ready()]
        self.rng.shuffle(pool)
        for kind, count in wanted:
            for _ in range(max(0, min(count, budget))):
                self._make_edge(pool.pop(), kind)
                budget -= 1
        if n >= 700 and pool:
            self._make_edge(pool.pop(), "long_ok")
        if self.n_notes >= 1000:
            self._out_of_scope_edges(plans)

    def _out_of_scope_edges(self, plans: list[_Plan]) -> None:
        """Empty and invalid-timestamp notes outside the scope (must not count as failures)."""
        pool = [p for p in plans if not p.in_scope() and "empty" not in p.tags]
        for plan, kind in zip(
            self.rng.sample(pool, 3), ("empty", "empty", "invalid_timestamp"), strict=True
        ):
            self._make_edge(plan, kind)

    def _make_edge(self, plan: _Plan, kind: str) -> None:
        """Turn a plan into one edge case."""
        plan.tags.add(kind)
        if kind == "invalid_timestamp":
            plan.created = None
            if self.rng.random() < 0.5:
                plan.updated = None
        else:
            plan.content_kind = kind
            plan.fragments = []

    def _force_coverage(self, plans: list[_Plan]) -> None:
        """Put every fragment kind, file mix and a check-in on some in-scope ready notes."""
        ready = [p for p in plans if p.ready()]
        jobs = [("fragment", f) for f in FORCED_FRAGMENTS] + [("files", f) for f in FORCED_FILES]
        jobs.append(("checkin", True))
        for plan, (what, value) in zip(
            self.rng.sample(ready, min(len(ready), len(jobs))), jobs, strict=False
        ):
            if what == "fragment":
                plan.fragments.append(value)
            elif what == "files":
                plan.files = list(value)
            else:
                plan.checkin = True

    # --- rendering ----------------------------------------------------------------

    def _render(self, plan: _Plan) -> None:
        """Append the note row, its attachments, check-in and tags."""
        rng = self.rng
        sti = rng.choice(STI_TYPES[plan.shape])
        self.ds.crm_notes.append(
            {
                "id": plan.id,
                "organization_id": self.cid,
                "type": sti,
                "crm_person_id": plan.person,
                "crm_company_id": plan.company,
                "crm_deal_id": plan.deal,
                "crm_ticket_id": plan.ticket,
                "crm_note_type_id": plan.note_type,
                "note": self._note_html(plan),
                "creator_id": plan.creator,
                "created_at": plan.created,
                "updated_at": plan.updated,
            }
        )
        if self.attachments:
            for ext in plan.files:
                self._file(plan, ext)
        if plan.checkin:
            self._checkin(plan)
        tags = set(plan.tags) | set(plan.fragments) | {f"shape:{plan.shape}"}
        self.ds.note_tags[plan.id] = tuple(sorted(tags))

    def _note_html(self, plan: _Plan) -> str | None:
        """The note column for a plan."""
        rng = self.rng
        if plan.content_kind == "empty":
            return content.EMPTY_VARIANTS[rng.randrange(len(content.EMPTY_VARIANTS))]
        if plan.content_kind == "too_long":
            return content.too_long_note(rng)
        if plan.content_kind == "long_ok":
            return content.long_ok_note(rng)
        user = rng.choice(self.users)
        return content.render(plan.fragments, rng, (user["id"], user["full_name"]))

    def _file(self, plan: _Plan, ext: str) -> None:
        """One attachment row (assets or crm_note_attachments) and its object."""
        kind, _ = FILE_TYPES[ext]
        table = "crm_note_attachments" if kind == "document" else "assets"
        row_id = self.ids.next(table)
        file_name = self.rng.choice(FILE_NAMES[ext])
        key = f"orgs/{self.cid}/notes/{plan.id}/{row_id}-{file_name}"
        data, content_type = make_file(ext, self.rng.getrandbits(32), f"{self.cid}-{plan.id}")
        self.ds.objects[key] = StoredObject(key, data, content_type)
        row = {
            "id": row_id,
            "key": key,
            "file_name": file_name,
            "content_type": content_type,
            "file_size": len(data),
        }
        if table == "assets":
            self.ds.assets.append(
                {
                    "id": row_id,
                    "assetable_type": "Crm::Note",
                    "assetable_id": plan.id,
                    "kind": kind,
                    **row,
                }
            )
        else:
            self.ds.crm_note_attachments.append({"crm_note_id": plan.id, **row})

    def _checkin(self, plan: _Plan) -> None:
        """A crm_checkins row near Indonesia."""
        rng = self.rng
        at = plan.created + timedelta(minutes=rng.randint(-30, 30)) if plan.created else None
        self.ds.crm_checkins.append(
            {
                "id": self.ids.next("crm_checkins"),
                "crm_note_id": plan.id,
                "latitude": Decimal(f"{rng.uniform(-8.5, 5.5):.6f}"),
                "longitude": Decimal(f"{rng.uniform(95.0, 141.0):.6f}"),
                "address": content.address(rng),
                "checked_in_at": at,
            }
        )

    def _contacts(self) -> None:
        """CDP contacts for every mapped person, and decoy contacts for unmapped ones."""
        decoy = decoy_company_sso_id(self.company_sso_id)
        for pid in self.people:
            mapped = pid not in self.unmapped
            self.ds.contacts.append(
                {
                    "_id": str(
                        uuid.uuid5(
                            NAMESPACE, f"{self.seed}/{'contact' if mapped else 'decoy'}/{pid}"
                        )
                    ),
                    "company_sso_id": self.company_sso_id if mapped else decoy,
                    "name": self.person_names[pid],
                    "crm_data": {"id": str(pid)},
                    "source": "crm",
                    "source_id": str(pid),
                    "created_at": EPOCH_START + timedelta(seconds=self.rng.randrange(EPOCH_SPAN_S)),
                }
            )


def _tz(hours: int) -> timezone:
    """A fixed UTC offset."""
    return timezone(timedelta(hours=hours))


def _timestamps(rng: random.Random) -> tuple[datetime, datetime]:
    """created_at/updated_at in +07/+08/+09, updated >= created, some with microseconds."""
    created = EPOCH_START + timedelta(seconds=rng.randrange(EPOCH_SPAN_S))
    if rng.random() < 0.3:
        created = created.replace(microsecond=rng.randrange(1, 1_000_000))
    updated = created
    if rng.random() < 0.6:
        updated = created + timedelta(seconds=rng.randint(60, 90 * 86400))
    hours = list(OFFSET_HOURS)
    tz = _tz(rng.choices(hours, list(OFFSET_HOURS.values()))[0])
    tz_updated = tz if rng.random() < 0.8 else _tz(rng.choice(hours))
    return created.astimezone(tz), updated.astimezone(tz_updated)


IMAGE_EXTS = ("png", "jpeg")
AUDIO_EXTS = ("mp3", "mp3", "m4a")
DOC_EXTS = ("pdf", "pdf", "xlsx", "docx", "csv")


def _pick_files(rng: random.Random) -> list[str]:
    """Attachment types of one note: ~30 % of notes have any."""
    if rng.random() >= 0.30:
        return []
    r = rng.random()
    if r < 0.45:
        return [rng.choice(IMAGE_EXTS) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    if r < 0.60:
        return [rng.choice(AUDIO_EXTS) for _ in range(1 if rng.random() < 0.8 else 2)]
    if r < 0.90:
        return [rng.choice(DOC_EXTS) for _ in range(rng.choice((1, 1, 2)))]
    return [rng.choice(IMAGE_EXTS), rng.choice(DOC_EXTS), rng.choice(AUDIO_EXTS)]
