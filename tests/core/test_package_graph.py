"""The package graph (docs/design.md): no plugin package imports another, sds-core imports none of
them, sds-3d only sds-core, and every sds package a module imports is declared in its pyproject;
the packages outside sds-core (the CLI aside) reach it through `sds_core.api` only, and no sds
module imports itself back through others (no import cycle, function-level imports included).

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
PLUGINS = {"sds_guidance", "sds_shapes", "sds_shapes_learned", "sds_nerf", "sds_mesh", "sds_gaussians"}
# what each package may import besides itself; the plugin packages: sds-core and sds-3d only
ALLOWED: dict[str, set[str]] = {
    CORE: set(),
    SHARED: {CORE},
    **{plugin: {CORE, SHARED} for plugin in PLUGINS},
    "sds_shapes_learned": {CORE, "sds_shapes"},  # the learned models of the shapes world and their trainer
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


API = "sds_core.api"
# The packages that reach sds-core through its one door, `sds_core.api`. The CLI is the host, not a
# plugin: it drives the catalog, the config resolution and the loop, which are no plugin API.
THROUGH_API = {SHARED, "sds_eval", *PLUGINS}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(tree: ast.AST, type_checking: bool = True) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of a module (function-level ones included) and whether it sits under
    `if TYPE_CHECKING:`; those are left out unless `type_checking`."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit_one(stmt, True)
                for stmt in child.orelse:
                    visit_one(stmt, guarded)
            else:
                visit_one(child, guarded)

    def visit_one(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and (type_checking or not guarded):
            found.append((node, guarded))
        visit(node, guarded)

    visit(tree, False)
    return found


def core_imports_besides_api(src: Path) -> list[str]:
    """`file:line: module` for each import of an sds_core module other than `sds_core.api` under `src`
    (module level, in functions or under TYPE_CHECKING)."""
    found = []
    for path in sorted(src.rglob("*.py")):
        for node, _ in imports_of(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif node.level == 0 and node.module == CORE:
                modules = [f"{CORE}.{alias.name}" for alias in node.names]
            else:
                modules = [node.module] if node.level == 0 and node.module else []
            for module in modules:
                if module.split(".")[0] == CORE and module != API:
                    found.append(f"{path.relative_to(src.parent)}:{node.lineno}: {module}")
    return found


def api_names_imported(src: Path) -> dict[str, set[str]]:
    """Every name imported `from sds_core.api` under `src` -> the files that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted(src.rglob("*.py")):
        for node, _ in imports_of(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == API:
                for alias in node.names:
                    found.setdefault(alias.name, set()).add(str(path.relative_to(src.parent)))
    return found


@pytest.mark.parametrize("name", sorted(THROUGH_API))
def test_package_reaches_sds_core_through_its_api_only(name: str) -> None:
    inside = core_imports_besides_api(_sources()[name])
    assert not inside, f"{name} imports sds-core modules other than {API}: {inside}"


@pytest.mark.parametrize("name", sorted(THROUGH_API))
def test_package_imports_only_names_the_api_lists(name: str) -> None:
    # the api's module `__getattr__` makes any name look fine to mypy: `__all__` is the list
    from sds_core import api

    unknown = {n: sorted(f) for n, f in api_names_imported(_sources()[name]).items() if n not in api.__all__}
    assert not unknown, f"{name} imports from {API} what its __all__ does not list: {unknown}"


def test_the_api_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    src = tmp_path / "sds_mesh"
    src.mkdir()
    (src / "__init__.py").write_text("from sds_core.api import Render\nimport sds_core.api\n")
    (src / "late.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from sds_core import cache\n"
        "if TYPE_CHECKING:\n    from sds_core.protocols import Render\n"
        "def f():\n    from sds_core.loop import resolve_device\n    import sds_core.shading\n"
    )
    assert [line.split(": ")[1] for line in core_imports_besides_api(src)] == [
        "sds_core.cache",
        "sds_core.protocols",
        "sds_core.loop",
        "sds_core.shading",
    ]


def test_no_core_module_imports_the_api() -> None:
    # the api imports sds-core modules (some on first use): one that imported it back would be a cycle
    src = _sources()[CORE]
    back = [
        f"{path.relative_to(src.parent)}:{node.lineno}"
        for path in sorted(src.rglob("*.py"))
        if path.name != "api.py"
        for node, _ in imports_of(ast.parse(path.read_text(encoding="utf-8")))
        if API in _imported_modules(node, {API}, CORE)
    ]
    assert not back, f"sds-core modules import {API}: {back}"


def test_the_public_api_is_torch_free() -> None:
    import subprocess
    import sys

    code = "import sys, sds_core.api; assert 'torch' not in sys.modules, 'importing sds_core.api imports torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_name_the_api_lists_resolves() -> None:
    from sds_core import api

    assert len(set(api.__all__)) == len(api.__all__), "a name listed twice in sds_core.api.__all__"
    missing = [name for name in api.__all__ if getattr(api, name, None) is None]
    assert not missing, f"sds_core.api lists names it does not have: {missing}"
    lazy = set(api._LAZY)
    assert lazy <= set(api.__all__), f"lazy names missing from __all__: {sorted(lazy - set(api.__all__))}"


def test_the_api_types_its_lazy_names() -> None:
    # mypy reads the lazy names from the TYPE_CHECKING block: it must import exactly those
    from sds_core import api

    tree = ast.parse(Path(api.__file__).read_text(encoding="utf-8"))
    typed = {
        alias.asname or alias.name
        for node, guarded in imports_of(tree)
        if guarded and isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == set(api._LAZY), f"TYPE_CHECKING block vs _LAZY: {sorted(typed ^ set(api._LAZY))}"


def module_names(sources: list[Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every module under the given package folders."""
    found = {}
    for src in sources:
        for path in sorted(src.rglob("*.py")):
            parts = list(path.relative_to(src.parent).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported_modules(node: ast.Import | ast.ImportFrom, known: set[str], package: str = "") -> set[str]:
    """The modules an import statement loads: `from package import name` is the submodule when
    `name` is one (among `known`), else the package; a relative import is read from `package`."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        base = ".".join([*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])])
    return {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}


def import_graph(sources: list[Path]) -> dict[str, set[str]]:
    """sds module -> the sds modules it imports (at module level or in functions; not the imports
    under `if TYPE_CHECKING:`, which never run)."""
    modules = module_names(sources)
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node, _ in imports_of(ast.parse(path.read_text(encoding="utf-8"), str(path)), type_checking=False):
            edges |= _imported_modules(node, known, package)
        graph[name] = (edges & known) - {name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, the first repeated at the end) per strongly connected group."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for group in groups:  # the shortest way from the group's first module back to itself
        start = min(group)
        paths = {start: [start]}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(graph[v] & group):
                if w == start:
                    queue = []
                    cycles.append([*paths[v], start])
                    break
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    queue.append(w)
    return sorted(cycles)


@pytest.mark.parametrize(
    "name",
    sorted(ALLOWED),
)
def test_no_import_cycle(name: str) -> None:
    cycles = [
        c for c in import_cycles(import_graph(list(_sources().values()))) if any(m.split(".")[0] == name for m in c)
    ]
    assert not cycles, f"import cycles in {name}: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_checker_sees_function_level_and_submodule_imports(tmp_path: Path) -> None:
    src = tmp_path / "sds_x"
    (src / "sub").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "sub" / "__init__.py").write_text("")
    (src / "a.py").write_text("from sds_x.sub import b\n")
    (src / "sub" / "b.py").write_text("def f():\n    import sds_x.c\n")
    (src / "c.py").write_text("from sds_x import a\n")
    (src / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sds_x import e\n")
    (src / "e.py").write_text("from sds_x.d import thing\n")
    assert import_cycles(import_graph([src])) == [["sds_x.a", "sds_x.sub.b", "sds_x.c", "sds_x.a"]]
