"""`sds plugins` at 80 columns: one line a plugin, the descriptions cut; `show` has them whole."""

from __future__ import annotations

import pytest

pytest.importorskip("typer")
from typer.testing import CliRunner

from sds_cli.app import app
from sds_core.plugins import load_catalog


def test_plugins_table_fits_80_columns() -> None:
    result = CliRunner().invoke(app, ["plugins"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(line for line in lines if len(line) > 80)
    for kind in ("generator", "guidance", "loss"):
        for spec in load_catalog().registry(kind):
            rows = [line for line in lines if line.split()[:1] == [spec.name]]
            assert len(rows) == 1, spec.name  # one line, name, package and version whole
            assert spec.provider in rows[0] and spec.version in rows[0]


def test_plugins_show_prints_the_whole_description() -> None:
    spec = max(load_catalog().registry("loss"), key=lambda s: len(s.description))
    result = CliRunner().invoke(app, ["plugins", "show", spec.name], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and spec.description in result.output
