"""`sds bench` on the CPU: each generator's step split as the loop times it, against the prior's
own cost, with a stored JSON result (no timing is asserted, only what is measured and reported)."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("typer")
pytest.importorskip("sds_shapes")
from typer.testing import CliRunner

from sds_cli.app import app

PARTS = ("render", "guidance", "backward", "optimizer")


def check_row(row: dict, prior_parts: set[str]) -> None:
    split = [row[f"step_{part}_ms"] for part in PARTS]
    assert all(v >= 0 for v in split) and math.isclose(sum(split), row["step_ms"], rel_tol=1e-9)
    priors = {k: v for k, v in row.items() if k.startswith("prior_") and k.endswith("_ms") and k != "prior_ms"}
    assert set(priors) == prior_parts and all(v > 0 for v in priors.values())
    assert math.isclose(sum(priors.values()), row["prior_ms"], rel_tol=1e-9)
    assert math.isclose(row["ratio"], row["step_ms"] / row["prior_ms"], rel_tol=1e-9)
    assert math.isclose(row["projected_preset_min"], row["step_ms"] * row["preset_steps"] / 60_000, rel_tol=1e-9)
    assert row["peak_mb"] > 0 and row["device"] == "cpu"


def test_bench_on_the_exact_prior_writes_a_stored_result(tmp_path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--generator", "image", "--generator", "nerf", "--device", "cpu", "--steps", "1"]
    args += ["--warmup", "0", "--set", "cameras.width=16", "--set", "cameras.height=16", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stored = json.loads(out.read_text())
    command = stored["command"]  # the whole command, defaults spelled out: it re-runs as it is
    assert command[:6] == ["sds", "bench", "--generator", "image", "--generator", "nerf"]
    assert command[command.index("--preset") + 1] == "draft" and command[-2:] == ["--json", str(out)]
    assert command.count("--set") == 2
    assert stored["torch"] and stored["device"].startswith("cpu") and stored["cuda"] is None
    assert {"date", "commit", "machine", "python", "driver"} <= set(stored)
    assert [row["generator"] for row in stored["rows"]] == ["image", "nerf"]
    for row in stored["rows"]:
        check_row(row, {"prior_unet_pair_ms"})
        assert row["guidance"] == "shapes" and row["preset"] == "draft" and row["render_side"] == 16
        assert row["generator"] in result.output
    assert "ratio" in result.output


def test_bench_of_a_latent_prior_counts_the_encoder(published_model) -> None:
    model = published_model("sd21-base")
    args = ["bench", "--generator", "image", "--guidance", "stable-diffusion", "--device", "cpu", "--steps", "1"]
    args += ["--warmup", "0", "--set", f"guidance.model={model}", "--set", "cameras.width=16"]
    args += ["--set", "cameras.height=16", "--set", "guidance.resolution=64"]
    import sds_cli.commands.bench as bench_command

    rows = []
    original = bench_command.bench_table
    bench_command.bench_table = lambda measured: rows.extend(measured) or original(measured)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        bench_command.bench_table = original
    assert result.exit_code == 0, result.output
    (row,) = rows
    check_row(row, {"prior_unet_pair_ms", "prior_vae_encoder_ms"})


def test_bench_refuses_bad_options_before_measuring(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--generator", "nope", "--device", "cpu"])
    assert result.exit_code == 2 and "nope" in result.stderr and "Traceback" not in result.output
    result = runner.invoke(app, ["bench", "--steps", "0"])
    assert result.exit_code == 2 and "--steps must be at least 1" in result.stderr
    result = runner.invoke(app, ["bench", "--json", str(tmp_path / "missing" / "b.json")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
