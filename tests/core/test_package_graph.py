"""The package graph (docs/design.md): no plugin package imports another, sds-core imports none of
them, sds-3d only sds-core, and every sds package a module imports is declared in its pyproject.

Static: the imports are read from the source with `ast` (function-level imports included), so
the check needs no package but sds-core installed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ROOT / "packages"
CORE, SHARED = "sds_core", "sds_3d"
PLUGINS = {"sds_guidance", "sds_shapes", "sds_nerf", "sds_mesh", "sds_gaussians"}
# what each package may import besides itself; the plugin packages: sds-core and sds-3d only
ALLOWED: dict[str, set[str]] = {
    CORE: set(),
    SHARED: {CORE},
    **{plugin: {CORE, SHARED} for plugin in PLUGINS},
    "sds_eval": {CORE, "sds_shapes"},  # geometry metrics of the shapes world (extra `geometry`)
    "sds_cli": {CORE, "sds_eval"},  # generators and priors reach the CLI through entry points only
}

tomllib = pytest.importorskip("tomllib")  # Python 3.11


def _sources() -> dict[str, Path]:
    """Import name -> source folder of every package of the repository."""
    found = {}
    for src in sorted(PACKAGES.glob("*/src/*")):
        if src.is_dir() and (src / "__init__.py").is_file():
            found[src.name] = src
    return found


def sds_imports(src: Path) -> dict[str, set[str]]:
    """Every sds_* package imported by the modules under `src` -> the files that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top.startswith("sds_") and top != src.name:
                    found.setdefault(top, set()).add(str(path.relative_to(src.parent)))
    return found


def declared(src: Path) -> set[str]:
    """The sds packages a package's pyproject requires (dependencies and extras), as import names."""
    project = tomllib.loads((src.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    names = (re.match(r"[A-Za-z0-9_.-]+", r) for r in requirements)
    return {m.group(0).replace("-", "_") for m in names if m and m.group(0).startswith("sds-")}


def test_every_package_is_classified() -> None:
    assert set(_sources()) == set(ALLOWED), "a new package needs its place in ALLOWED (and docs/design.md)"


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_package_imports_only_what_the_graph_allows(name: str) -> None:
    imports = sds_imports(_sources()[name])
    forbidden = {pkg: sorted(files) for pkg, files in imports.items() if pkg not in ALLOWED[name]}
    assert not forbidden, f"{name} imports {forbidden}"


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_package_declares_what_it_imports(name: str) -> None:
    src = _sources()[name]
    missing = set(sds_imports(src)) - declared(src)
    assert not missing, f"{name} imports {sorted(missing)} without declaring them in its pyproject.toml"


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    src = tmp_path / "sds_mesh"
    src.mkdir()
    (src / "__init__.py").write_text("")
    (src / "late.py").write_text("def f():\n    from sds_nerf.export import write_final\n    import sds_core.loop\n")
    assert set(sds_imports(src)) == {"sds_nerf", "sds_core"}


def test_the_public_api_is_torch_free_and_complete() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sds_core.api as api; missing = [n for n in api.__all__ if not hasattr(api, n)];"
        "assert not missing, missing; assert 'torch' not in sys.modules, 'sds_core.api imports torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
