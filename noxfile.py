"""Sessions for development and CI: tests, core (sds-core alone), lint, typecheck, demo, bench.

Every install is pinned by constraints.txt (torch 2.13.0, the CPU build here).
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "core", "tests", "ray"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
CONSTRAINTS = ("-c", "constraints.txt")
PACKAGES = (
    "./packages/sds-core",
    "./packages/sds-guidance",
    "./packages/sds-nerf",
    "./packages/sds-mesh",
    "./packages/sds-eval",
    "./packages/sds-cli",
)
ENV = {"TORCH_EXTENSIONS_DIR": os.path.join(os.getcwd(), ".nox", "torch_extensions"), "HF_HUB_OFFLINE": "1"}


def install_all(session: nox.Session, *extra: str) -> None:
    session.install(*CONSTRAINTS, "torch==2.13.0")
    session.install(*CONSTRAINTS, *PACKAGES, *extra)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite against the installed packages (not the source tree)."""
    install_all(session, "./packages/sds-guidance[vsd]", "pytest")  # peft: VSD's LoRA tests
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs, env=ENV)


@nox.session(python=PYTHON)
def ray(session: nox.Session) -> None:
    """`sds batch --executor ray` on a real one-machine Ray cluster, a killed worker included."""
    install_all(session, "./packages/sds-cli[ray]", "pytest", "psutil")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/ray", *session.posargs, env=ENV)


@nox.session(python=PYTHON)
def core(session: nox.Session) -> None:
    """sds-core alone: it imports and its tests pass without diffusers, nerfacc, typer or rich."""
    session.install(*CONSTRAINTS, "torch==2.13.0")
    session.install(*CONSTRAINTS, "./packages/sds-core", "pytest")
    session.run(
        "python",
        "-c",
        "import importlib.util as u, sds_core, sds_core.loop;"
        "extra = [m for m in ('diffusers', 'nerfacc', 'typer', 'rich') if u.find_spec(m)];"
        "assert not extra, extra; print('sds_core', sds_core.__version__, 'imports alone')",
    )
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/core", *session.posargs, env=ENV)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over the packages."""
    install_all(session, "mypy")
    session.run("mypy", *(f"{p}/src" for p in PACKAGES))


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The offline demo: list the plugins, then the README's generation with the `shapes` prior."""
    install_all(session)
    session.run("sds", "plugins")
    out = os.path.join("runs", "demo")
    args = session.posargs or ["a red cube", "--guidance", "shapes", "--preset", "draft"]
    session.run("sds", "generate", *args, "--out", out, "--device", "cpu", env=ENV)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run one benchmark script: nox -s bench -- benchmarks/cli_help.py"""
    install_all(session)
    session.run("python", *(session.posargs or ["benchmarks/cli_help.py"]), env=ENV)
