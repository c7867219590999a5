"""The package layout: dependency arrows point one way, into restorex_core.

    nodes/ ──┐
    restorex_cli/ ──> restorex_core/ (the method: torch, safetensors, open_clip)
    training/ ──┘  (training may also use restorex_cli's image reader)

Checked on the source (ast), so a lazy import inside a function counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HOST = {"comfy", "comfy_extras", "folder_paths", "server", "execution", "nodes"}  # ComfyUI's own top-level modules
FORBIDDEN = {
    "restorex_core": {"restorex_cli", "training", *HOST},
    "restorex_cli": {"training", *HOST},
    "training": HOST,
}
# `python -m restorex_core` is kept as an alias of `python -m restorex_cli`: a program entry point, never imported.
ALIAS = Path("restorex_core/__main__.py")


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path`` (relative imports stay inside the package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules(package: str) -> list[Path]:
    return sorted(p.relative_to(REPO) for p in (REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_upward(package):
    found = {str(path): sorted(imported_packages(REPO / path) & FORBIDDEN[package])
             for path in modules(package) if path != ALIAS}
    assert not {path: names for path, names in found.items() if names}, f"{package} must not import these"


def test_the_core_alias_only_runs_the_cli():
    assert imported_packages(REPO / ALIAS) == {"restorex_cli"}


def test_nodes_import_the_core_only_from_outside():
    found = {str(path): sorted(imported_packages(REPO / path) & {"restorex_cli", "training"})
             for path in modules("nodes")}
    assert not {path: names for path, names in found.items() if names}
