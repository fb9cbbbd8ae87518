"""The layout's rules (README "Where things are"): families over a shared core.

No module of the shared core imports a family; no asset module imports another asset
module; every path the README's table names exists.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "notes_pipeline"
FAMILIES = ("notes_pipeline.contact_notes", "notes_pipeline.activity_logs")
CORE_DIRS = (PACKAGE / "core", PACKAGE / "instance")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def defines_assets(path: Path) -> bool:
    return "@dg.asset" in path.read_text(encoding="utf-8") or "@dg.multi_asset" in (
        path.read_text(encoding="utf-8")
    )


CORE_MODULES = sorted(p for d in CORE_DIRS for p in d.rglob("*.py"))
ASSET_MODULES = sorted(p for p in PACKAGE.rglob("*.py") if defines_assets(p))


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_shared_core_imports_no_family(path):
    family_imports = {m for m in imported_modules(path) if any(m.startswith(f) for f in FAMILIES)}
    assert not family_imports, f"{module_name(path)} imports {sorted(family_imports)}"


def test_asset_modules_exist_and_import_no_other_asset_module():
    names = {module_name(p) for p in ASSET_MODULES}
    assert {"notes_pipeline.contact_notes.assets.extract"} <= names
    for path in ASSET_MODULES:
        others = {m for m in imported_modules(path) if m in names - {module_name(path)}}
        assert not others, f"{module_name(path)} imports asset modules {sorted(others)}"


def test_every_path_in_the_readme_layout_table_exists():
    """Each row's first path is repository-relative; later bare names sit beside it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    checked = 0
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        names = re.findall(r"`([^`]+)`", row.split("|")[1])
        base = (ROOT / names[0]).parent
        for name in names:
            path = ROOT / name if "/" in name else base / name
            assert path.exists(), f"README's layout names {name} ({path}), which is missing"
            checked += 1
    assert checked > 20
