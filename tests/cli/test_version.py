"""`sds --version`: one "name version" line for each installed sds package, exit 0; and every
package's `__version__` is its installed distribution's."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

import pytest

pytest.importorskip("typer")
from typer.testing import CliRunner

from sds_cli.app import app

PACKAGES = {
    "sds-core": "sds_core",
    "sds-cli": "sds_cli",
    "sds-3d": "sds_3d",
    "sds-eval": "sds_eval",
    "sds-gaussians": "sds_gaussians",
    "sds-guidance": "sds_guidance",
    "sds-mesh": "sds_mesh",
    "sds-nerf": "sds_nerf",
    "sds-shapes": "sds_shapes",
    "sds-shapes-learned": "sds_shapes_learned",
}


def installed() -> dict[str, str]:
    found = {}
    for dist in PACKAGES:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return found


def test_version_prints_each_installed_package() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for dist, number in installed().items():
        assert f"{dist} {number}" in lines
    assert all(len(line.split()) == 2 for line in lines)


@pytest.mark.parametrize("dist", sorted(PACKAGES))
def test_dunder_version_is_the_distributions(dist) -> None:
    if dist not in installed():
        pytest.skip(f"{dist} is not installed")
    module = importlib.import_module(PACKAGES[dist])
    assert module.__version__ == version(dist)
