"""The package layout: dependency arrows point one way.

    nodes/ ─────────────────────────┐
    restorex_cli/ ──┬─> restorex_io/ │  (image files: numpy, Pillow, tifffile, torch)
    training/ ──────┘                v
    restorex_cli/, training/ ──> restorex_core/ (the method: torch, safetensors, open_clip)

restorex_io knows nothing of the rest of RestoreX, the core knows nothing of its hosts, and inside the core
the modules import one another without a cycle (video, ``sequence.py``, is a layer above the model).
Checked on the source (ast), so a lazy import inside a function, or one for type checking only, counts as much
as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HOST = {"comfy", "comfy_extras", "folder_paths", "server", "execution", "nodes"}  # ComfyUI's own top-level modules
OURS = {"restorex_core", "restorex_io", "restorex_cli", "training"}
FORBIDDEN = {
    "restorex_core": {"restorex_io", "restorex_cli", "training", *HOST},
    "restorex_io": {"restorex_core", "restorex_cli", "training", *HOST},
    "restorex_cli": {"training", *HOST},
    "training": {"restorex_cli", *HOST},
    "nodes": {"restorex_io", "restorex_cli", "training"},
}


def imports(path: Path) -> list[tuple[str, int, str | None]]:
    """(module, level, name) of every import in ``path``: level 0 for absolute ones."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(node.module or "", node.level, alias.name) for alias in node.names]
    return found


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path`` (relative imports stay inside the package)."""
    return {module.split(".")[0] for module, level, _ in imports(path) if level == 0}


def modules(package: str) -> list[Path]:
    return sorted(p.relative_to(REPO) for p in (REPO / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_graph() -> dict[str, set[str]]:
    """restorex_core module -> the restorex_core modules it imports (the package facade left out)."""
    names = {module_name(p) for p in modules("restorex_core")}
    graph: dict[str, set[str]] = {}
    for path in modules("restorex_core"):
        if path.name == "__init__.py":
            continue
        here = module_name(path).split(".")[:-1]  # the package this module is in
        edges = set()
        for module, level, name in imports(REPO / path):
            base = module.split(".") if level == 0 else here[:len(here) - level + 1] + module.split(".")
            target = ".".join(p for p in base if p)
            full = f"{target}.{name}" if name else target
            edges.add(full if full in names else target)
        graph[module_name(path)] = {e for e in edges if e in names and not e.endswith("__init__") and
                                    e != "restorex_core" and not (REPO / e.replace(".", "/") / "__init__.py").is_file()}
    return graph


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_against_the_arrows(package):
    found = {str(path): sorted(imported_packages(REPO / path) & FORBIDDEN[package]) for path in modules(package)}
    assert not {path: names for path, names in found.items() if names}, f"{package} must not import these"


def test_every_package_of_ours_is_packaged_and_checked():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")

    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {name.rstrip("*") for name in include} == OURS
    assert OURS <= set(FORBIDDEN)


def test_the_core_is_a_library_not_a_program():
    assert not (REPO / "restorex_core" / "__main__.py").exists()  # the command line is `python -m restorex_cli`


def test_the_core_modules_import_one_another_without_a_cycle():
    graph = core_graph()
    assert "restorex_core.model" in graph["restorex_core.sequence"]  # the checker sees lazy and typing imports
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        if module in trail:
            cycle = trail[trail.index(module):] + (module,)
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, (*trail, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
