"""`notes-migration`: Ops commands outside the UI (status, CID registration)."""

from __future__ import annotations

import argparse
import json
import os
import sys

import dagster as dg

from notes_pipeline.core.discovery import new_cids
from notes_pipeline.core.partitions import cid_partitions
from notes_pipeline.core.resources.crm import PostgresCrmSource
from notes_pipeline.core.status import CidStatus, all_statuses, cid_status

COLUMNS = (
    "cid",
    "status",
    "progress_pct",
    "notes_processed",
    "notes_total",
    "failure_rate",
    "match_pct",
)


def _table(rows: list[CidStatus]) -> str:
    data = [
        [str(getattr(r, c)) if getattr(r, c) is not None else "-" for c in COLUMNS] for r in rows
    ]
    widths = [
        max(len(c), *(len(row[i]) for row in data)) if data else len(c)
        for i, c in enumerate(COLUMNS)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in data]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    instance = dg.DagsterInstance.get()
    if args.all:
        rows = all_statuses(instance)
    else:
        if args.cid not in instance.get_dynamic_partitions(cid_partitions.name):
            print(f"CID {args.cid} is not a registered partition", file=sys.stderr)
            return 2
        rows = [cid_status(instance, args.cid)]
    if args.json:
        print(json.dumps([r.as_dict() for r in rows] if args.all else rows[0].as_dict()))
    else:
        print(_table(rows))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    instance = dg.DagsterInstance.get()
    crm = PostgresCrmSource(dsn=os.environ["NOTES_PIPELINE_CRM_DSN"])
    added = new_cids(crm, instance)
    if added:
        instance.add_dynamic_partitions(cid_partitions.name, added)
    total = len(instance.get_dynamic_partitions(cid_partitions.name))
    print(json.dumps({"added": added, "total": total}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notes-migration", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="PRD monitor state per CID")
    target = status.add_mutually_exclusive_group(required=True)
    target.add_argument("--cid")
    target.add_argument("--all", action="store_true")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    register = sub.add_parser("register-cids", help="add a partition per CID with Person notes")
    register.set_defaults(func=cmd_register)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
