"""Counts of a synthetic Dataset, per profile and per CID, incl. the expected pipeline outcomes."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from devtools.synthetic.content import EXTRA_FRAGMENTS, TEXT_FRAGMENTS
from devtools.synthetic.files import FILE_TYPES

if TYPE_CHECKING:
    from devtools.synthetic.dataset import Dataset

EXT_BY_CONTENT_TYPE = {ct: ext for ext, (_, ct) in FILE_TYPES.items()}
CDP_TYPE = {
    "png": "image",
    "jpeg": "image",
    "pdf": "pdf",
    "xlsx": "xlsx",
    "csv": "xlsx",
    "docx": "doc",
}
FEATURES = tuple(TEXT_FRAGMENTS) + tuple(EXTRA_FRAGMENTS)


class _Index:
    """Lookups shared by every CID's summary."""

    def __init__(self, ds: Dataset) -> None:
        self.users = {u["id"]: u for u in ds.users}
        self.identity = {(r["company_sso_id"], r["email"]) for r in ds.sso_users}
        self.contacts = {(c["company_sso_id"], c["crm_data"]["id"]) for c in ds.contacts}
        self.files: dict[int, list[str]] = defaultdict(list)
        for row in ds.assets:
            self.files[row["assetable_id"]].append(EXT_BY_CONTENT_TYPE[row["content_type"]])
        for row in ds.crm_note_attachments:
            self.files[row["crm_note_id"]].append(EXT_BY_CONTENT_TYPE[row["content_type"]])
        self.sizes = {o.key: len(o.data) for o in ds.objects.values()}
        self.checkins = Counter(c["crm_note_id"] for c in ds.crm_checkins)
        self.tags = ds.note_tags


def summarize(ds: Dataset, allowed_note_types) -> dict:
    """Profile-level summary: totals, rows per table and a per-CID breakdown."""
    index = _Index(ds)
    notes_by_org: dict[int, list[dict]] = defaultdict(list)
    for note in ds.crm_notes:
        notes_by_org[note["organization_id"]].append(note)
    per_cid = {}
    for org in ds.organizations:
        per_cid[str(org["id"])] = _org_summary(
            ds, org, notes_by_org[org["id"]], index, frozenset(allowed_note_types)
        )
    from devtools.synthetic.dataset import TABLES

    audits = audit_summary(ds)
    for cid, counts in audits["per_cid"].items():
        per_cid[cid]["audits"] = counts
    return {
        "profile": ds.profile,
        "seed": ds.seed,
        "audit_rows": ds.audit_count(),
        "audit_unattributable": audits["unattributable"],
        "audit_cases": audits["cases"],
        "contact_id_map": len(ds.contact_id_map),
        "allowed_note_types": sorted(allowed_note_types),
        "cid_count": len(ds.organizations),
        "cids": [org["id"] for org in ds.organizations],
        "rows": {name: len(ds.table(name)) for name in TABLES},
        "sso_users": len(ds.sso_users),
        "contact_documents": len(ds.contacts),  # incl. decoy-tenant contacts
        "objects": len(ds.objects),
        "object_bytes": sum(index.sizes.values()),
        "totals": _add_up(per_cid.values()),
        "per_cid": per_cid,
    }


def _add_up(items) -> dict:
    """Element-wise sum of nested count dicts (percentages and ids are skipped)."""
    total: dict = {}
    for item in items:
        for key, value in item.items():
            if key in ("cid", "company_sso_id") or key.endswith("_pct"):
                continue
            if isinstance(value, dict):
                total[key] = _add_up([total.get(key, {}), value])
            else:
                total[key] = total.get(key, 0) + value
    return total


def _org_summary(
    ds: Dataset, org: dict, notes: list[dict], index: _Index, allowed: frozenset
) -> dict:
    """Counts for one CID."""
    csid = org["company_sso_id"]
    in_scope = [
        n for n in notes if n["crm_person_id"] is not None and n["crm_note_type_id"] in allowed
    ]
    users = [u for u in ds.users if u["organization_id"] == org["id"]]
    people = {p["id"] for p in ds.crm_people if p["organization_id"] == org["id"]}
    with_notes = {n["crm_person_id"] for n in notes if n["crm_person_id"] is not None}
    unmapped = {p for p in people if (csid, str(p)) not in index.contacts}
    summary = {
        "cid": org["id"],
        "company_sso_id": csid,
        "notes_total": len(notes),
        "person_notes": sum(1 for n in notes if n["crm_person_id"] is not None),
        "in_scope_notes": len(in_scope),
        "by_note_type": _count(str(n["crm_note_type_id"]) for n in notes),
        "by_fk_shape": _count(_shape(n) for n in notes),
        "by_sti_type": _count(n["type"] for n in notes),
        "users": len(users),
        "users_deactivated": sum(1 for u in users if u["deleted_at"] is not None),
        "users_without_identity": sum(1 for u in users if (csid, u["email"]) not in index.identity),
        "persons": len(people),
        "persons_with_notes": len(with_notes),
        "persons_unmapped": len(unmapped),
        "contacts": len(people) - len(unmapped),
        "decoy_contacts": len(unmapped),
        **_note_counts(notes, csid, index),
        "timestamps": _timestamp_counts(notes),
        "features": _feature_counts(notes, index),
        "in_scope": _note_counts(in_scope, csid, index),
        "expected": _expected(in_scope, csid, index),
    }
    return summary


def _count(values) -> dict:
    """Counter as a plain, key-sorted dict."""
    return dict(sorted(Counter(values).items()))


def _shape(note: dict) -> str:
    """FK shape of a note: which of person/deal/company/ticket are set."""
    parts = [
        name
        for name in ("person", "deal", "company", "ticket")
        if note[f"crm_{name}_id"] is not None
    ]
    return "+".join(parts) or "none"


def _creator_kind(note: dict, csid: str, index: _Index) -> str:
    """null | dangling | no_identity | deactivated | known."""
    user = index.users.get(note["creator_id"])
    if note["creator_id"] is None:
        return "null"
    if user is None:
        return "dangling"
    if (csid, user["email"]) not in index.identity:
        return "no_identity"
    return "deactivated" if user["deleted_at"] is not None else "known"


def _note_counts(notes: list[dict], csid: str, index: _Index) -> dict:
    """Edge-case, creator, attachment and check-in counts over ``notes``."""
    creators = Counter(_creator_kind(n, csid, index) for n in notes)
    deactivated = sum(
        1 for n in notes if (index.users.get(n["creator_id"]) or {}).get("deleted_at") is not None
    )
    return {
        "unmapped_person_notes": sum(
            1
            for n in notes
            if n["crm_person_id"] is not None
            and (csid, str(n["crm_person_id"])) not in index.contacts
        ),
        "invalid_timestamps": sum(1 for n in notes if _bad_timestamps(n)),
        "empty_notes": _tagged(notes, index, "empty"),
        "too_long_notes": _tagged(notes, index, "too_long"),
        "long_ok_notes": _tagged(notes, index, "long_ok"),
        "unknown_creator_notes": creators["null"] + creators["dangling"] + creators["no_identity"],
        "null_creator_notes": creators["null"],
        "dangling_creator_notes": creators["dangling"],
        "creator_without_identity_notes": creators["no_identity"],
        "deactivated_creator_notes": deactivated,
        "checkins": sum(index.checkins[n["id"]] for n in notes),
        "attachments": _attachment_counts(notes, index),
    }


def _bad_timestamps(note: dict) -> bool:
    """created_at or updated_at missing."""
    return note["created_at"] is None or note["updated_at"] is None


def _tagged(notes: list[dict], index: _Index, tag: str) -> int:
    """Number of notes carrying ``tag``."""
    return sum(1 for n in notes if tag in index.tags[n["id"]])


def _attachment_counts(notes: list[dict], index: _Index) -> dict:
    """Attachments by storage kind and by file type, plus per-note shapes."""
    per_note = [index.files.get(n["id"], []) for n in notes]
    exts = Counter(ext for files in per_note for ext in files)
    kinds = Counter(FILE_TYPES[ext][0] for files in per_note for ext in files)
    return {
        "total": sum(exts.values()),
        "image": kinds["image"],
        "audio": kinds["audio"],
        "document": kinds["document"],
        **{ext: exts[ext] for ext in FILE_TYPES},
        "notes_with_any": sum(1 for f in per_note if f),
        "notes_with_one": sum(1 for f in per_note if len(f) == 1),
        "notes_with_several": sum(1 for f in per_note if len(f) > 1),
        "notes_with_two_audios": sum(
            1 for f in per_note if sum(FILE_TYPES[e][0] == "audio" for e in f) >= 2
        ),
    }


def _timestamp_counts(notes: list[dict]) -> dict:
    """created_at offsets, microsecond precision and updated != created."""
    valid = [n for n in notes if not _bad_timestamps(n)]
    offsets = _count(n["created_at"].isoformat()[-6:] for n in valid)
    return {
        "created_offsets": offsets,
        "with_microseconds": sum(1 for n in valid if n["created_at"].microsecond),
        "updated_differs": sum(1 for n in valid if n["updated_at"] != n["created_at"]),
        "updated_offset_differs": sum(
            1 for n in valid if n["updated_at"].utcoffset() != n["created_at"].utcoffset()
        ),
    }


def _feature_counts(notes: list[dict], index: _Index) -> dict:
    """Notes containing each HTML fragment kind."""
    return {name: _tagged(notes, index, name) for name in FEATURES}


def _expected(in_scope: list[dict], csid: str, index: _Index) -> dict:
    """Outcome the SPEC's rules give each in-scope note (first failing rule decides)."""
    reasons = Counter(_failure(n, csid, index) for n in in_scope)
    ready = [n for n in in_scope if _failure(n, csid, index) is None]
    failed = len(in_scope) - len(ready)
    n = len(in_scope) or 1
    return {
        "ready": len(ready),
        "failed": failed,
        "CONTACT_NOT_MAPPED": reasons["CONTACT_NOT_MAPPED"],
        "NOTE_EMPTY": reasons["NOTE_EMPTY"],
        "NOTE_TOO_LONG": reasons["NOTE_TOO_LONG"],
        "INVALID_TIMESTAMP": reasons["INVALID_TIMESTAMP"],
        "failure_pct": round(100 * failed / n, 3),
        "contact_coverage_pct": round(100 * (1 - reasons["CONTACT_NOT_MAPPED"] / n), 3),
        "owner_unresolved": sum(
            1 for r in ready if _creator_kind(r, csid, index) not in ("known", "deactivated")
        ),
        "attachments_planned": _planned_attachments(ready, index),
        "extra_voice_notes_dropped": sum(
            max(0, sum(FILE_TYPES[e][0] == "audio" for e in index.files.get(r["id"], [])) - 1)
            for r in ready
        ),
        "checkins_dropped": sum(index.checkins[r["id"]] for r in ready),
    }


def _failure(note: dict, csid: str, index: _Index) -> str | None:
    """Reason code of an in-scope note, or None when it should migrate."""
    tags = index.tags[note["id"]]
    if (csid, str(note["crm_person_id"])) not in index.contacts:
        return "CONTACT_NOT_MAPPED"
    if "empty" in tags:
        return "NOTE_EMPTY"
    if "too_long" in tags:
        return "NOTE_TOO_LONG"
    if _bad_timestamps(note):
        return "INVALID_TIMESTAMP"
    return None


def _planned_attachments(ready: list[dict], index: _Index) -> dict:
    """CDP attachment types the ready notes should end up with (one voice note max)."""
    counts: Counter = Counter()
    for note in ready:
        files = index.files.get(note["id"], [])
        counts.update(CDP_TYPE[e] for e in files if e in CDP_TYPE)
        if any(FILE_TYPES[e][0] == "audio" for e in files):
            counts["voice_note"] += 1
    return {k: counts[k] for k in ("image", "voice_note", "pdf", "xlsx", "doc")} | {
        "total": sum(counts.values())
    }


# --- activity logs (SPEC-activity-logs §16) --------------------------------------------------


def _utc(value):
    """A created_at as naive UTC; 'infinity' as datetime.max; None stays None."""
    from datetime import UTC, datetime

    if value == "infinity":
        return datetime.max
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def audit_summary(ds: Dataset) -> dict:
    """Audit counts: per CID the Stage-0 COUNT (``in_scope``; also since
    ``DATE_RANGE_START``), rows never extracted, the expected plan by outcome and code, and
    the unattributable audits in the CID's window; the profile's case tags."""
    from devtools.synthetic.audits import DATE_RANGE_START, KINDS

    per_cid: dict[str, dict] = {str(o["id"]): _empty_audits() for o in ds.organizations}
    stamps: dict[str, list] = defaultdict(list)
    unattributable = []
    for row in ds.audits:
        cid = ds.audit_cids[row["id"]]
        expected = ds.audit_expected[row["id"]]
        stamp = _utc(row["created_at"])
        if cid is None:
            if row["auditable_type"] in KINDS:
                unattributable.append(stamp)
            continue
        counts = per_cid[str(cid)]
        if row["auditable_type"] not in KINDS:
            counts["out_of_scope_rows"] += 1
        elif stamp is None:
            counts["null_created_at"] += 1
        else:
            counts["in_scope"] += 1
            counts["since_date_range_start"] += stamp >= DATE_RANGE_START
            stamps[str(cid)].append(stamp)
            counts[expected["outcome"]] += 1
            if expected.get("code"):
                counts["by_code"][expected["code"]] = counts["by_code"].get(expected["code"], 0) + 1
    if ds.audit_stream is not None:
        since = ds.audit_stream.since(DATE_RANGE_START)
        for cid, n in ds.audit_stream.counts.items():
            per_cid[str(cid)].update(in_scope=n, since_date_range_start=since[cid], ready=n)
    for cid, values in stamps.items():
        low = min(values)
        per_cid[cid]["unattributable_in_window"] = sum(
            1 for t in unattributable if t is not None and t >= low
        )
    cases = Counter(tag for tags in ds.audit_tags.values() for tag in tags)
    return {
        "per_cid": per_cid,
        "unattributable": len(unattributable),
        "cases": dict(sorted(cases.items())),
    }


def _empty_audits() -> dict:
    return {
        "in_scope": 0,
        "since_date_range_start": 0,
        "null_created_at": 0,
        "out_of_scope_rows": 0,
        "ready": 0,
        "skipped": 0,
        "failed": 0,
        "by_code": {},
        "unattributable_in_window": 0,
    }
