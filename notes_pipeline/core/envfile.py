"""KEY=VALUE environment files, such as the ``.stack/env`` written by ``scripts/stack.sh up``."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values


def stack_env_file(repo_root: Path) -> Path:
    """The local stack's env file (``$NOTES_PIPELINE_STACK_DIR/env``, default ``.stack/env``)."""
    return Path(os.environ.get("NOTES_PIPELINE_STACK_DIR", repo_root / ".stack")) / "env"


def read_env_file(path: Path) -> dict[str, str]:
    """Variables of a dotenv file (python-dotenv syntax); a key without a value maps to ``""``."""
    return {key: value or "" for key, value in dotenv_values(path).items()}
