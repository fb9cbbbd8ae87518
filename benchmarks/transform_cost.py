"""Per-note CPU cost of the normalization (``plan_note``) against the floor of ``nh3.clean``.

Loads every note of the given CIDs through ``PostgresCrmSource`` (the pipeline's own reader),
prefetches contacts (``CdpMongo.contacts_by_crm_person_id``) and owners
(``PostgresIdentityDirectory.resolve``) so only the pure transform is timed, then times, on
the same notes:

* ``plan_note`` (SPEC rules 1-7) over all notes, and over the notes that reach the sanitizer
  (in scope, contact mapped, non-null HTML);
* ``nh3.clean(html)`` with nh3's defaults, on the same notes' HTML (the floor).

CPU time (``time.process_time``), best of ``repeat`` passes; the ratio is plan_note / nh3.
Also prints a cProfile breakdown of plan_note (``--profile``).

Standalone use (stack env loaded, data seeded):
  .venv/bin/python benchmarks/transform_cost.py --cids 2001-2130 [--repeat 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

import nh3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notes_pipeline.contact_notes.records import OwnerResolution  # noqa: E402
from notes_pipeline.contact_notes.rules.plan import (  # noqa: E402
    PlanRules,
    plan_note,
    resolve_owner,
    scope_reason,
)
from notes_pipeline.contact_notes.settings import MigrationSettings  # noqa: E402
from notes_pipeline.core.crm_records import CrmNote, Organization  # noqa: E402
from notes_pipeline.core.resources.crm import PostgresCrmSource  # noqa: E402
from notes_pipeline.core.resources.identity import PostgresIdentityDirectory  # noqa: E402
from notes_pipeline.core.resources.mongo import CdpMongo  # noqa: E402

Item = tuple[CrmNote, Organization, str | None, OwnerResolution]


def load_items(cids: list[str], env: dict[str, str]) -> list[Item]:
    """Every note of ``cids`` with its org, contact id and owner resolved up front."""
    crm = PostgresCrmSource(dsn=env["NOTES_PIPELINE_CRM_DSN"])
    mongo = CdpMongo(uri=env["NOTES_PIPELINE_MONGO_URI"], database=env["NOTES_PIPELINE_MONGO_DB"])
    identity = PostgresIdentityDirectory(dsn=env["NOTES_PIPELINE_IDENTITY_DSN"])
    allowed = frozenset(MigrationSettings().allowed_note_type_ids)
    items: list[Item] = []
    for cid in cids:
        org = crm.get_organization(cid)
        notes = [n for page in crm.iter_note_pages(cid, 1000) for n in page]
        in_scope = [n for n in notes if scope_reason(n, allowed) is None]
        contacts = mongo.contacts_by_crm_person_id(
            org.company_sso_id, (str(n.crm_person_id) for n in in_scope)
        )
        sso = identity.resolve(
            org.company_sso_id, (n.creator_email for n in in_scope if n.creator_email)
        )
        items.extend(
            (n, org, contacts.get(str(n.crm_person_id)), resolve_owner(n, sso)) for n in notes
        )
    return items


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def measure(items: list[Item], repeat: int = 5, profile: bool = False) -> dict:
    rules = PlanRules(
        frozenset(MigrationSettings().allowed_note_type_ids), "https://cdp.local.test/attachments"
    )

    def plan_all(subset: list[Item]) -> None:
        for note, org, contact, owner in subset:
            plan_note(note, org=org, contact_id=contact, owner=owner, rules=rules)

    sanitized = [
        it
        for it in items
        if scope_reason(it[0], rules.allowed_note_type_ids) is None
        and it[2] is not None
        and it[0].note is not None
    ]
    html_all = [n.note for n, *_ in items if n.note is not None]
    html_sanitized = [it[0].note for it in sanitized]

    def clean_all(htmls: list[str]) -> None:
        for html in htmls:
            nh3.clean(html)

    plan_all(items)  # warm-up (regex compilation, imports)
    result = {
        "notes": len(items),
        "notes_with_html": len(html_all),
        "notes_reaching_sanitizer": len(sanitized),
        "repeat": repeat,
    }
    t_plan_all = _best(lambda: plan_all(items), repeat)
    t_nh3_all = _best(lambda: clean_all(html_all), repeat)
    t_plan_san = _best(lambda: plan_all(sanitized), repeat)
    t_nh3_san = _best(lambda: clean_all(html_sanitized), repeat)
    result.update(
        {
            "plan_note_all_s": round(t_plan_all, 4),
            "nh3_clean_all_s": round(t_nh3_all, 4),
            "plan_note_us_per_note_all": round(t_plan_all / len(items) * 1e6, 1),
            "nh3_clean_us_per_note_all": round(t_nh3_all / len(html_all) * 1e6, 1),
            "ratio_all": round(t_plan_all / t_nh3_all, 2),
            "plan_note_sanitized_s": round(t_plan_san, 4),
            "nh3_clean_sanitized_s": round(t_nh3_san, 4),
            "plan_note_us_per_note_sanitized": round(t_plan_san / len(sanitized) * 1e6, 1),
            "nh3_clean_us_per_note_sanitized": round(t_nh3_san / len(sanitized) * 1e6, 1),
            "ratio_sanitized": round(t_plan_san / t_nh3_san, 2),
        }
    )
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        plan_all(sanitized)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(14)
        result["profile_top_tottime"] = out.getvalue()
    return result


def parse_cids(spec: str) -> list[str]:
    cids: list[str] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cids.extend(str(c) for c in range(int(lo), int(hi or lo) + 1))
    return cids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cids", default="2001-2130")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    started = time.perf_counter()
    items = load_items(parse_cids(args.cids), dict(os.environ))
    load_s = time.perf_counter() - started
    result = measure(items, args.repeat, args.profile)
    result["load_s"] = round(load_s, 2)
    profile = result.pop("profile_top_tottime", None)
    print(json.dumps(result, indent=2))
    if profile:
        print(profile)


if __name__ == "__main__":
    main()
