"""`notes-migration`: Ops commands outside the UI (status, the HTTP monitor API, CID registration,
index down-step)."""

from __future__ import annotations

import argparse
import json
import os
import sys

import dagster as dg

from notes_pipeline.activity_logs.settings import ActivityLogSettings
from notes_pipeline.core.discovery import new_cids
from notes_pipeline.core.overview import overview_rows, overview_text
from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.resources.crm import PostgresCrmSource
from notes_pipeline.core.resources.mongo import CdpMongo
from notes_pipeline.core.resources.mongo_indexes import CONTACT_NOTES_INDEX_NAME
from notes_pipeline.core.status import all_statuses, cid_status
from notes_pipeline.definitions import FAMILIES


def _status_assets(family: str):
    return next(f.STATUS_ASSETS for f in FAMILIES if f.STATUS_ASSETS.family == family)


ALL_FAMILIES = "all"


def cmd_status(args: argparse.Namespace) -> int:
    """Print the PRD §8 monitor state of one CID or of every registered CID: the overview
    table of ``migration_overview`` (``core.overview``), or with ``--json`` every field.
    ``--family all``: one table per family (``--json``: an object keyed by family)."""
    instance = dg.DagsterInstance.get()
    if not args.all and args.cid not in instance.get_dynamic_partitions(cid_partitions.name):
        print(f"CID {args.cid} is not a registered partition", file=sys.stderr)
        return 2
    families = (
        [f.STATUS_ASSETS for f in FAMILIES]
        if args.family == ALL_FAMILIES
        else [_status_assets(args.family)]
    )
    tables: dict[str, object] = {}
    for assets in families:
        if args.all:
            rows = all_statuses(instance, assets)
        else:
            rows = [cid_status(instance, args.cid, assets)]
        if args.json:
            tables[assets.family] = [r.as_dict() for r in rows] if args.all else rows[0].as_dict()
        else:
            tables[assets.family] = overview_text(overview_rows(rows, assets))
    if args.json:
        print(json.dumps(tables if args.family == ALL_FAMILIES else tables[args.family]))
    elif args.family == ALL_FAMILIES:
        print("\n\n".join(f"## {family}\n{text}" for family, text in tables.items()))
    else:
        print(tables[args.family])
    return 0


def cmd_drop_index(args: argparse.Namespace) -> int:
    """The documented down-step (SPEC "Target"): drop the idempotency index; data untouched."""
    mongo = CdpMongo(
        uri=os.environ["NOTES_PIPELINE_MONGO_URI"], database=os.environ["NOTES_PIPELINE_MONGO_DB"]
    )
    mongo.drop_indexes()
    print(json.dumps({"dropped": CONTACT_NOTES_INDEX_NAME}))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    """Add a partition for each CRM account with Person notes or in-scope audits (as the
    discovery sensor does; audits read with ``NOTES_PIPELINE_CRM_AUDIT_DSN``, else the CRM
    DSN, and the default ``auditable_kinds``)."""
    instance = dg.DagsterInstance.get()
    crm = PostgresCrmSource(dsn=os.environ["NOTES_PIPELINE_CRM_DSN"])
    audit_dsn = os.environ.get("NOTES_PIPELINE_CRM_AUDIT_DSN", "").strip()
    crm_audits = PostgresCrmSource(dsn=audit_dsn) if audit_dsn else crm
    kinds = ActivityLogSettings().discovery_auditable_kinds()
    added = new_cids(crm, instance, crm_audits, kinds)
    if added:
        instance.add_dynamic_partitions(cid_partitions.name, added)
    total = len(instance.get_dynamic_partitions(cid_partitions.name))
    print(json.dumps({"added": added, "total": total}))
    return 0


def cmd_serve_status(args: argparse.Namespace) -> int:
    """Serve the HTTP monitor API (``core.status_api``) of every family with a status route on
    ``--host``/``--port``, reading the Dagster instance of ``DAGSTER_HOME``. Refuses to start
    (exit 2) without ``NOTES_PIPELINE_STATUS_USER`` and ``NOTES_PIPELINE_STATUS_PASSWORD``."""
    import uvicorn

    from notes_pipeline.core.status_api import (
        MissingCredentials,
        create_app,
        credentials_from_env,
        status_routes,
    )

    try:
        user, password = credentials_from_env(os.environ)
    except MissingCredentials as exc:
        print(f"serve-status: refusing to start: {exc}", file=sys.stderr)
        return 2
    routes = status_routes([f.STATUS_ASSETS for f in FAMILIES])
    app = create_app(dg.DagsterInstance.get(), routes, user=user, password=password)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `notes-migration` entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="notes-migration", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="PRD monitor state per CID")
    target = status.add_mutually_exclusive_group(required=True)
    target.add_argument("--cid")
    target.add_argument("--all", action="store_true")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--family",
        default="contact_notes",
        choices=[*(f.STATUS_ASSETS.family for f in FAMILIES), ALL_FAMILIES],
        help="the migration family, or 'all' for one table per family (default contact_notes)",
    )
    status.set_defaults(func=cmd_status)
    register = sub.add_parser(
        "register-cids", help="add a partition per CID with Person notes or in-scope audits"
    )
    register.set_defaults(func=cmd_register)
    drop = sub.add_parser(
        "drop-index", help="down-step: drop contact_notes' idempotency index (data untouched)"
    )
    drop.set_defaults(func=cmd_drop_index)
    serve = sub.add_parser(
        "serve-status", help="HTTP monitor API: GET /private/notes/migration/status?cid="
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8090)
    serve.set_defaults(func=cmd_serve_status)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
