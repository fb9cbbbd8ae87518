"""KEY=VALUE environment files, such as the ``.stack/env`` written by ``scripts/stack.sh up``."""

from __future__ import annotations

import os
from pathlib import Path


def stack_env_file(repo_root: Path) -> Path:
    """The local stack's env file (``$NOTES_PIPELINE_STACK_DIR/env``, default ``.stack/env``)."""
    return Path(os.environ.get("NOTES_PIPELINE_STACK_DIR", repo_root / ".stack")) / "env"


def read_env_file(path: Path) -> dict[str, str]:
    """Variables of a KEY=VALUE file; blank lines, comments, ``export`` and quotes allowed."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip().removeprefix("export ").strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values
