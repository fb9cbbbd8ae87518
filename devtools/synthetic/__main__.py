"""CLI: ``python -m devtools.synthetic seed|summary --profile PROFILE [--seed N] [--notes N]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from devtools.synthetic.dataset import LARGE_CIDS, LARGE_NOTES, PROFILES, build_dataset
from notes_pipeline.core.envfile import read_env_file


def _parser() -> argparse.ArgumentParser:
    """Argument parser with ``seed`` and ``summary`` sub-commands."""
    parser = argparse.ArgumentParser(prog="python -m devtools.synthetic")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("seed", "replace the stack's synthetic data"),
        ("summary", "print the dataset's counts as JSON (no I/O)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--profile", choices=PROFILES, required=True)
        cmd.add_argument("--seed", type=int, default=42)
        cmd.add_argument(
            "--notes",
            type=int,
            help=f"notes of the one CID of {' / '.join(LARGE_CIDS)} (default {LARGE_NOTES:,})",
        )
    seed = sub.choices["seed"]
    seed.add_argument("--no-attachments", action="store_true", help="skip the S3 upload")
    seed.add_argument("--workers", type=int, default=32, help="S3 upload threads")
    seed.add_argument(
        "--truncate",
        action="store_true",
        help="empty all CRM/identity tables (also non-synthetic test orgs)",
    )
    seed.add_argument(
        "--env-file",
        type=Path,
        help="KEY=VALUE file (e.g. .stack/env) for unset NOTES_PIPELINE_* vars",
    )
    sub.choices["summary"].add_argument(
        "--totals-only", action="store_true", help="leave out the per-CID breakdown"
    )
    return parser


def load_env_file(path: Path) -> None:
    """Set variables from a KEY=VALUE file unless already set."""
    for key, value in read_env_file(path).items():
        os.environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.notes is not None and args.profile not in LARGE_CIDS:
        parser.error(f"--notes is for the profiles {', '.join(LARGE_CIDS)}")
    started = time.monotonic()
    dataset = build_dataset(args.profile, args.seed, args.notes)
    if args.command == "summary":
        summary = dataset.summary()
        if args.totals_only:
            summary.pop("per_cid")
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    from devtools.synthetic.writer import Targets, seed

    if args.env_file:
        load_env_file(args.env_file)
    build_s = round(time.monotonic() - started, 2)
    result = seed(
        dataset,
        Targets.from_env(),
        attachments=not args.no_attachments,
        workers=args.workers,
        truncate=args.truncate,
    )
    result["timings"] = {
        "build_s": build_s,
        **result["timings"],
        "wall_s": round(time.monotonic() - started, 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
