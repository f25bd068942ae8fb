"""`sds config`: the resolved tree of a command line, each value with where it came from, built
without any model."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("typer")
pytest.importorskip("sds_mesh")
pytest.importorskip("sds_shapes")
from typer.testing import CliRunner

from sds_cli.app import app
from sds_cli.defaults import DEFAULT_NAMES
from sds_core.plugins import PluginSpec, load_catalog
from sds_core.resolve import resolve_config


def test_config_names_the_source_of_every_value(tmp_path, monkeypatch) -> None:
    def no_build(self, *args, **kwargs):
        raise AssertionError(f"sds config built {self.name}")

    monkeypatch.setattr(PluginSpec, "build", no_build)
    file = tmp_path / "run.json"
    file.write_text(json.dumps({"optim": {"lr": 0.25, "eps": 1e-9}, "generator": {"radius": 0.3}}))
    args = ["config", "--generator", "mesh", "--preset", "draft", "--config", str(file)]
    args += ["--set", "optim.lr=0.5", "--steps", "7", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    sources, tree = shown["sources"], shown["config"]
    assert sources["optim.lr"] == "--set" and tree["optim"]["lr"] == 0.5  # --set wins over the file
    assert sources["optim.eps"] == str(file) and sources["generator.radius"] == str(file)
    assert sources["run.steps"] == "--steps" and tree["run"]["steps"] == 7
    assert sources["generator.subdivisions"] == "mesh (preset draft)"
    assert sources["generator.smoothness"] == "default (mesh)" and sources["run.seed"] == "default"
    assert sources["generator.name"] == "--generator" and sources["guidance.name"] == "default (shapes)"
    assert set(sources) == {f"{s}.{k}" for s, section in tree.items() for k in section}
    overrides = {"optim": {"lr": 0.5, "eps": 1e-9}, "generator": {"radius": 0.3}, "run": {"steps": 7}}
    names = {"generator": "mesh", "guidance": None, "loss": None}
    expected = resolve_config(load_catalog(), "draft", overrides, names, DEFAULT_NAMES)
    assert tree == expected.tree  # what `sds generate` with the same options runs with


def test_config_prints_a_table_and_refuses_bad_values_in_one_sentence() -> None:
    runner = CliRunner()
    table = runner.invoke(app, ["config", "--preset", "draft", "--set", "run.seed=3"])
    assert table.exit_code == 0 and "run.seed" in table.output and "--set" in table.output
    bad = runner.invoke(app, ["config", "--set", "optim.lr=-1"])
    assert bad.exit_code == 2 and "optim.lr must be greater than 0" in bad.stderr
    assert "Traceback" not in bad.output
