"""Activity logs on the ``perf`` profile (SPEC-activity-logs §11, §16): one CID with 1,000,000
audits interleaved with 500,000 of a filler CID, written with COPY, then the Stage-0 probe,
the keyset extraction and the plan of that CID timed through the pipeline's own code.

Everything goes to scratch databases this script creates and drops (never the demo's or the
tests'): PostgreSQL ``crm_perf_<hex>`` (CRM and the identity table) through the stack's admin
DSN, MongoDB ``cdp_perf_<hex>``. The plan runs with ``PostgresIdentityDirectory`` on the
scratch database (the stack's identity service does not know the perf users).

  set -a; . .stack/env; set +a
  .venv/bin/python benchmarks/activity_logs_perf.py [--plan-limit N] [--keep]

Prints one JSON object: seed timings, the probe (COUNT, EXPLAIN summary), extraction rows/s,
planning rows/s and the peak RSS. Part 2 (#13) adds the write rate (≥ 500 rec/s, §11).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.synthetic import build_dataset  # noqa: E402
from devtools.synthetic.audits import PERF_CID  # noqa: E402
from devtools.synthetic.writer import Targets, seed  # noqa: E402
from notes_pipeline.activity_logs.lookups import (  # noqa: E402
    IdentityCache,
    fetch_lookups,
    plan_audits,
)
from notes_pipeline.activity_logs.rules.plan import PlanContext  # noqa: E402
from notes_pipeline.activity_logs.settings import ActivityLogSettings  # noqa: E402
from notes_pipeline.core.crm_records import AuditScope  # noqa: E402
from notes_pipeline.core.resources.crm import PostgresCrmSource  # noqa: E402
from notes_pipeline.core.resources.identity import PostgresIdentityDirectory  # noqa: E402
from notes_pipeline.core.resources.mongo import CdpMongo  # noqa: E402


def _with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def _admin(dsn: str, statement: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    """Seed perf into scratch databases, probe/extract/plan CID 3001, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan-limit", type=int, default=200_000, help="audits planned")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    args = parser.parse_args(argv)
    env = os.environ
    suffix = uuid.uuid4().hex[:8]
    crm_db, cdp_db = f"crm_perf_{suffix}", f"cdp_perf_{suffix}"
    admin = env["NOTES_PIPELINE_CRM_ADMIN_DSN"]
    _admin(admin, f"CREATE DATABASE {crm_db}")
    dsn = _with_db(admin, crm_db)
    out: dict = {"crm_db": crm_db, "cdp_db": cdp_db}
    try:
        started = time.monotonic()
        dataset = build_dataset("perf")
        targets = replace(
            Targets.from_env(),
            crm_dsn=dsn,
            identity_dsn=dsn,
            mongo_db=cdp_db,
        )
        out["seed"] = seed(dataset, targets, attachments=False)["timings"]
        out["seed"]["wall_s"] = round(time.monotonic() - started, 1)
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("ANALYZE")
        settings = ActivityLogSettings()
        source = PostgresCrmSource(dsn=dsn)
        org = source.get_organization(str(PERF_CID))
        scope = AuditScope(org.cid, settings.auditable_kinds, source.audit_high_water_id())
        t = time.monotonic()
        probe = source.probe_audits(scope, settings.page_size)
        out["probe"] = {
            "seconds": round(time.monotonic() - t, 2),
            "count": probe.count,
            "unattributable": probe.unattributable,
            "min_created_at": probe.min_created_at,
            "max_created_at": probe.max_created_at,
            "explain": probe.explain,
        }
        t = time.monotonic()
        audits = []
        pages = source.iter_audit_pages(
            replace(scope, cutoff=probe.cutoff),
            settings.page_size,
            start_after=probe.first_id - 1,
            stop_at=probe.last_id,
        )
        for page in pages:
            audits.extend(page)
        seconds = time.monotonic() - t
        out["extract"] = {
            "audits": len(audits),
            "complete": len(audits) == probe.count,
            "seconds": round(seconds, 1),
            "rows_per_s": round(len(audits) / seconds),
        }
        mongo = CdpMongo(uri=env["NOTES_PIPELINE_MONGO_URI"], database=cdp_db)
        identity = PostgresIdentityDirectory(dsn=dsn)
        cache = IdentityCache(identity, org.company_sso_id, settings.identity_retries)
        ctx = PlanContext(org.company_sso_id, settings.category_rules(), "perf")

        lookup_seconds = [0.0]

        def fetch(items):
            began = time.monotonic()
            try:
                return fetch_lookups(
                    items, company_sso_id=org.company_sso_id, cdp=mongo, crm=source, identity=cache
                )
            finally:
                lookup_seconds[0] += time.monotonic() - began

        sample = audits[: args.plan_limit]
        t = time.monotonic()
        entries, batches = plan_audits(sample, ctx, fetch, settings.page_size)
        seconds = time.monotonic() - t
        out["plan"] = {
            "audits": len(entries),
            "ready": sum(1 for e in entries if str(e.outcome) == "ready"),
            "batches": batches,
            "seconds": round(seconds, 1),
            "lookup_seconds": round(lookup_seconds[0], 1),
            "rows_per_s": round(len(entries) / seconds),
        }
        out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    finally:
        if not args.keep:
            with MongoClient(env["NOTES_PIPELINE_MONGO_URI"]) as client:
                client.drop_database(cdp_db)
            _admin(admin, f"DROP DATABASE IF EXISTS {crm_db} WITH (FORCE)")
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
