"""Sessions for development and CI: lint, typecheck, each package alone (`package`), the mesh
draft without sds-nerf or diffusers (`offline_mesh`), tests, ray, demo, bench.

Every install is pinned by constraints.txt (torch 2.13.0, the CPU build here).
"""

from __future__ import annotations

import glob
import os
import shutil

import nox

# CI's default. Each virtualenv costs installing time (torch alone 11 s here, the whole stack 74 s), so
# CI makes two with torch: the light stack built up one package at a time (sds-core alone with its
# tests, sds-shapes added with its tests, sds-3d added, then the offline mesh draft); and every
# package, where mypy, the tests, the Ray tests and the docs build (`mkdocs build --strict`) run.
# `nox -s typecheck`, `nox -s ray`, `nox -s docs` and `nox -s package` (every package alone, about 1
# to 2 minutes each) run those parts alone.
nox.options.sessions = ["lint", "offline_mesh", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
# --no-compile: pip byte-compiles every file it installs (torch: 30 s to install that way, 11 s
# without, measured here); Python compiles the modules a session imports on first import instead,
# and caches them, which needs bytecode writing on in the sessions' processes
CONSTRAINTS = ("--no-compile", "-c", "constraints.txt")
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
PACKAGES = (
    "sds-core",
    "sds-guidance",
    "sds-shapes",
    "sds-shapes-learned",
    "sds-3d",
    "sds-nerf",
    "sds-mesh",
    "sds-gaussians",
    "sds-eval",
    "sds-cli",
)
ENV = {"TORCH_EXTENSIONS_DIR": os.path.join(os.getcwd(), ".nox", "torch_extensions"), "HF_HUB_OFFLINE": "1"}
# The Khronos glTF-Validator (npm; no maintained validator is on PyPI), for the GLB tests: installed
# with npm where npm exists, found by the tests through SDS_GLTF_VALIDATOR (they skip without it).
GLTF_VALIDATOR = "gltf-validator@2.0.0-dev.3.10"


def install_gltf_validator(session: nox.Session) -> dict[str, str]:
    """npm-install the pinned glTF validator into .nox/node; the env that points the tests at it."""
    if shutil.which("npm") is None:
        session.log("npm not found: the glTF validation tests will skip")
        return {}
    prefix = os.path.join(os.getcwd(), ".nox", "node")
    if not os.path.isdir(os.path.join(prefix, "node_modules", "gltf-validator")):
        try:  # an unreachable npm registry costs the GLB validation tests (they skip), not the session
            session.run("npm", "install", "--silent", "--no-audit", "--no-fund", "--fetch-retries=1",
                        "--fetch-timeout=60000", "--prefix", prefix, GLTF_VALIDATOR, external=True)  # fmt: skip
        except nox.command.CommandFailed:
            session.log("npm install failed: the glTF validation tests will skip")
            return {}
    return {"SDS_GLTF_VALIDATOR": os.path.join(prefix, "node_modules")}


def install_all(session: nox.Session, *extra: str, packages: tuple[str, ...] = ()) -> None:
    session.install(*CONSTRAINTS, "torch==2.13.0")
    install(session, *extra, packages=(*PACKAGES, *packages))


def install(session: nox.Session, *requirements: str, packages: tuple[str, ...] = ()) -> None:
    """pip install `requirements` and this tree's `packages` ("sds-shapes[metrics]"), the latter from
    wheels built once per run; those are reinstalled over the same version (pip would skip them and a
    reused environment would keep stale code)."""
    wheels = local(session, *packages)
    session.install(*CONSTRAINTS, *wheels, *requirements)
    if wheels:
        stripped = sorted({wheel.partition("[")[0] for wheel in wheels})
        reinstall = ("install", "-q", "--no-compile", "--no-deps", "--force-reinstall")
        session.run("python", "-m", "pip", *reinstall, *stripped, silent=True)


WHEELS: dict[str, str] = {}  # package name -> its wheel, built once per nox run


def local(session: nox.Session, *specs: str) -> list[str]:
    """The wheels of this tree's packages for `session.install`: "sds-shapes[metrics]" -> its wheel[metrics].

    Built once per nox run, all of them in one build environment of their own (.nox/wheels): given the
    folders, pip builds each package in a new isolated environment in every session (34 s for the
    nine here, against 6 s this way).
    """
    if not WHEELS:
        out = os.path.join(os.getcwd(), ".nox", "wheels")
        shutil.rmtree(out, ignore_errors=True)  # an earlier run's wheels: never installed stale
        builder = os.path.join(out, "build-env")
        session.run("python", "-m", "venv", builder)
        python = os.path.join(builder, "bin", "python")
        session.run(python, "-m", "pip", "install", "-q", *CONSTRAINTS, "hatchling", external=True)
        folders = [f"./packages/{name}" for name in PACKAGES]
        build = ("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out)
        session.run(python, "-m", "pip", *build, *folders, external=True)
        for name in PACKAGES:
            (wheel,) = glob.glob(os.path.join(out, name.replace("-", "_") + "-*.whl"))
            WHEELS[name] = wheel
    return [WHEELS[spec.partition("[")[0]] + "".join(spec.partition("[")[1:]) for spec in specs]


TYPECHECK = ("mypy", *(f"./packages/{name}/src" for name in PACKAGES))
# peft: VSD's LoRA tests; ray and psutil: the Ray executor's tests; [train]: the learned models' trainer
TEST_EXTRAS = ("sds-guidance[vsd]", "sds-cli[ray]", "sds-shapes-learned[train]")
RAY_TESTS = "tests/ray"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """mypy, every test against the installed packages (not the source tree), then the Ray tests.

    The Ray tests run after the rest, in one process: they start a one-machine cluster.
    `nox -s tests -- ARGS` runs only `pytest ARGS`.
    """
    install_all(session, "pytest", "pytest-xdist", "psutil", "mypy", *DOCS_TOOLS, packages=TEST_EXTRAS)
    # one pytest worker a core, one thread a worker (two threads a process on two cores oversubscribe):
    # measured here, the suite takes 2 min 18 s this way
    env = {**ENV, **install_gltf_validator(session), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if session.posargs:
        session.run("pytest", "-q", "-p", "no:cacheprovider", "-n", "auto", *session.posargs, env=env)
        return
    session.run(*TYPECHECK)
    # worksteal: a worker that runs out takes tests queued on the other, so the minute-long tests
    # (the nerf draft, the shipped-model runs) do not leave one core idle at the end
    session.run(
        "pytest", "-q", "-p", "no:cacheprovider", "-n", "auto", "--dist", "worksteal", "--durations=15",
        f"--ignore={RAY_TESTS}", env=env,
    )  # fmt: skip
    session.run("pytest", "-q", "-p", "no:cacheprovider", RAY_TESTS, env=ENV)
    build_docs(session)  # in this environment, which has every package: a docs session of its own costs ~2 min


@nox.session(python=PYTHON)
def ray(session: nox.Session) -> None:
    """`sds batch --executor ray` on a real one-machine Ray cluster, a killed worker included."""
    install_all(session, "pytest", "psutil", packages=("sds-cli[ray]",))
    session.run("pytest", "-q", "-p", "no:cacheprovider", RAY_TESTS, *session.posargs, env=ENV)


# Each package with only its declared dependencies: the sds packages it requires (installed from
# this tree, pip cannot find them on an index) and its tests. `absent`: modules that must not come
# with it. The graph itself is tests/core/test_package_graph.py.
ALONE: dict[str, dict[str, tuple[str, ...]]] = {
    "core": {"install": ("sds-core",), "tests": ("tests/core",), "absent": ("diffusers", "nerfacc", "typer", "rich")},
    "shapes": {
        "install": ("sds-core", "sds-shapes[metrics]"),
        "tests": ("tests/shapes",),
        "absent": ("diffusers", "transformers", "sds_guidance", "sds_nerf", "sds_shapes_learned"),
    },
    # the learned models and their trainer: over sds-shapes, run by sds-guidance's backends
    "shapes_learned": {
        "install": ("sds-core", "sds-guidance", "sds-shapes", "sds-shapes-learned[train]"),
        "tests": ("tests/shapes_learned",),
        "absent": ("sds_nerf", "sds_mesh", "sds_gaussians"),
    },
    "3d": {"install": ("sds-core", "sds-3d"), "tests": (), "absent": ("nerfacc", "diffusers", "sds_nerf", "sds_mesh")},
    "nerf": {
        "install": ("sds-core", "sds-3d", "sds-nerf"),
        "tests": ("tests/nerf",),
        "absent": ("sds_mesh", "diffusers"),
    },
    "mesh": {
        "install": ("sds-core", "sds-3d", "sds-mesh"),
        "tests": ("tests/mesh",),
        "absent": ("sds_nerf", "nerfacc"),
    },
    "gaussians": {
        "install": ("sds-core", "sds-3d", "sds-gaussians", "sds-shapes[metrics]"),
        "tests": ("tests/gaussians",),
        "absent": ("sds_nerf", "sds_mesh", "nerfacc", "diffusers", "gsplat"),
    },
    "guidance": {
        "install": ("sds-core", "sds-guidance"),
        "tests": ("tests/guidance",),
        "absent": ("sds_shapes", "sds_nerf", "sds_mesh"),
    },
    "eval": {
        "install": ("sds-core", "sds-shapes[metrics]", "sds-eval[geometry]"),
        "tests": ("tests/eval",),
        "absent": ("sds_guidance", "diffusers"),
    },
}


def add_package(
    session: nox.Session, name: str, present: tuple[str, ...] = (), pytest_args: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """Install ALONE[name] (less the `present` sds packages), check that sds_NAME imports and that none
    of its `absent` modules is there, run its tests; returns the sds packages now installed."""
    spec = ALONE[name]
    install(session, "pytest", packages=tuple(p for p in spec["install"] if p not in present))
    module = "sds_" + name
    session.run(
        "python",
        "-c",
        f"import importlib.util as u, {module};"
        f"extra = [m for m in {spec['absent']!r} if u.find_spec(m)];"
        f"assert not extra, extra; print({module!r}, 'imports alone')",
    )
    if spec["tests"]:
        session.run("pytest", "-q", "-p", "no:cacheprovider", *spec["tests"], *pytest_args, env=ENV)
    return (*present, *(p for p in spec["install"] if p not in present))


@nox.session(python=PYTHON)
@nox.parametrize("name", list(ALONE))
def package(session: nox.Session, name: str) -> None:
    """One package alone: it imports, what it must not pull in is absent, its tests pass."""
    session.install(*CONSTRAINTS, "torch==2.13.0")
    add_package(session, name, pytest_args=tuple(session.posargs))


@nox.session(python=PYTHON, reuse_venv=False)  # a reused environment holds the whole stack already
def offline_mesh(session: nox.Session) -> None:
    """sds-core alone, sds-shapes added, sds-3d added, then a mesh draft on `shapes` with sds-mesh,
    sds-shapes, sds-cli.

    The first three stages are the checks of `nox -s package` for core, shapes and 3d, in one
    environment that grows: each package meets only what it declares (and what came before, which
    none of them forbids). The draft runs with no sds-nerf, diffusers or transformers installed.
    """
    session.install(*CONSTRAINTS, "torch==2.13.0")
    present = add_package(session, "core")
    present = add_package(session, "shapes", present)
    add_package(session, "3d", present)
    install(session, packages=("sds-mesh", "sds-shapes", "sds-cli"))
    session.run(
        "python",
        "-c",
        "import importlib.util as u; extra = [m for m in ('sds_nerf', 'diffusers', 'transformers') if u.find_spec(m)];"
        "assert not extra, extra",
    )
    out = os.path.join(session.create_tmp(), "offline-mesh")  # new: the environment is never reused
    # 40 of the draft's 800 steps (16 s here, against 37 s for 200): this checks that the light packages
    # run and export a mesh offline; benchmarks/mesh_shapes.py measures the whole draft's quality
    args = ["a red cube", "--generator", "mesh", "--guidance", "shapes", "--preset", "draft", "--steps", "40"]
    args += ["--device", "cpu"]
    session.run("sds", "generate", *args, "--out", out, *session.posargs, env=ENV)
    session.run("python", "-c", f"import pathlib; assert (pathlib.Path({out!r}) / 'final' / 'mesh.glb').is_file()")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over the packages (CI runs it within the tests session instead)."""
    install_all(session, "mypy")
    session.run(*TYPECHECK)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The offline demo: list the plugins, then the README's generation with the `shapes` prior."""
    install_all(session)
    session.run("sds", "plugins")
    out = os.path.join("runs", "demo")
    if os.path.exists(os.path.join(out, "config.json")):  # the last demo's run: start afresh
        session.log(f"removing the previous demo run {out}")
        shutil.rmtree(out)
    args = session.posargs or ["a red cube", "--guidance", "shapes", "--preset", "draft"]
    session.run("sds", "generate", *args, "--out", out, "--device", "cpu", env=ENV)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The docs site into .nox/site: `mkdocs build --strict`, whose hook (docs/hooks.py) generates the
    CLI reference, the plugin options, the benchmark tables and the model cards from the installed
    packages and benchmarks/results/ (docs/gen_pages.py)."""
    install_all(session, *DOCS_TOOLS)
    build_docs(session)


DOCS_TOOLS = ("mkdocs", "mkdocs-material")


def build_docs(session: nox.Session) -> None:
    """`mkdocs build --strict` (warnings are errors) into .nox/site."""
    site = os.path.join(os.getcwd(), ".nox", "site")
    session.run("mkdocs", "build", "--strict", "--site-dir", site, env={**ENV, "NO_MKDOCS_2_WARNING": "1"})


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run one benchmark script: nox -s bench -- benchmarks/cli_help.py"""
    install_all(session)
    session.run("python", *(session.posargs or ["benchmarks/cli_help.py"]), env=ENV)
