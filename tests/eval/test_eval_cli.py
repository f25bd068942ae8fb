"""`sds eval clip-r-precision` end to end: a real run, a tiny CLIP folder, a table and JSON."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("sds_cli")
pytest.importorskip("sds_eval")
from typer.testing import CliRunner

from sds_cli.app import app
from tests.cli.test_cli import IMAGE_RUN, TARGET_PLUGIN


def test_eval_clip_r_precision_command(install_entry_point, tmp_path, published_model) -> None:
    install_entry_point("sds-target", "sds_target_plugin", TARGET_PLUGIN, attr="plugin")
    runner = CliRunner()
    runs = []
    for prompt in ("A blue bicycle parked by a metal gate.", "a red cube"):
        out = tmp_path / prompt[:6].replace(" ", "-")
        result = runner.invoke(app, ["generate", prompt, *IMAGE_RUN, "--out", str(out), "--steps", "2"])
        assert result.exit_code == 0, result.output
        runs.append(str(out))
    clip_dir = published_model("clip-vit-base-patch32")  # B/32 made small (tests/fixtures)
    report_path = tmp_path / "report.json"
    args = ["eval", "clip-r-precision", *runs, "--clip", str(clip_dir), "--views", "3", "--resolution", "16"]
    result = runner.invoke(app, [*args, "--json", str(report_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "CLIP R-Precision" in result.stdout and "all runs" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["captions"] == 154  # the 153, plus "a red cube."
    assert set(report["r_precision"][str(clip_dir)]) == {"color", "geometry"}
    assert [r["prompt"] for r in report["runs"]] == ["A blue bicycle parked by a metal gate.", "a red cube"]

    missing = runner.invoke(app, ["eval", "clip-r-precision", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no checkpoint" in missing.stderr


def test_eval_geometry_of_a_mesh_run(tmp_path) -> None:
    pytest.importorskip("sds_mesh")
    pytest.importorskip("sds_shapes")
    runner = CliRunner()
    out = tmp_path / "cube"
    args = ["generate", "a red cube", "--generator", "mesh", "--guidance", "shapes", "--preset", "draft"]
    result = runner.invoke(app, [*args, "--device", "cpu", "--steps", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = tmp_path / "geometry.json"
    result = runner.invoke(app, ["eval", "geometry", str(out), "--resolution", "32", "--json", str(report)])
    assert result.exit_code == 0, result.output
    row = json.loads(report.read_text())["runs"][0]
    assert row["object"] == "a red cube" and row["level"] is None
    assert 0.2 < row["iou"] < 1.0 and 0.0 < row["chamfer"] < 0.5 and 0.0 <= row["colour_error"] <= 1.0
    assert row["iou"] <= row["iou_yaw_free"] <= 1.0 and 0.0 <= row["yaw_degrees"] < 90.0
    image_run = tmp_path / "image"
    args = ["generate", "a red cube", "--generator", "image", "--guidance", "shapes", "--preset", "draft"]
    assert runner.invoke(app, [*args, "--steps", "2", "--out", str(image_run), "--device", "cpu"]).exit_code == 0
    flat = runner.invoke(app, ["eval", "geometry", str(image_run)])
    assert flat.exit_code == 2 and "exposes no 3D geometry" in flat.stderr


def test_eval_geometry_of_a_nerf_run_uses_the_export_level(tmp_path) -> None:
    pytest.importorskip("sds_nerf")
    pytest.importorskip("sds_shapes")
    runner = CliRunner()
    out = tmp_path / "cube"
    args = ["generate", "a red cube", "--guidance", "shapes", "--preset", "draft", "--device", "cpu"]
    assert runner.invoke(app, [*args, "--steps", "3", "--out", str(out)]).exit_code == 0
    report = tmp_path / "geometry.json"
    result = runner.invoke(app, ["eval", "geometry", str(out), "--resolution", "32", "--json", str(report)])
    assert result.exit_code == 0, result.output
    row = json.loads(report.read_text())["runs"][0]
    config = json.loads((out / "config.json").read_text())["config"]["generator"]
    alpha, samples = config["mesh_alpha"], config["samples_per_ray"]
    step = 2 * config["radius"] / samples
    assert row["level"] == pytest.approx(-math.log(1 - alpha) / step, rel=1e-3)  # the level export uses
    assert 0.0 <= row["iou"] <= 1.0


def test_eval_geometry_takes_the_truth_from_the_prompt_whatever_the_guidance(published_model, tmp_path) -> None:
    pytest.importorskip("sds_nerf")
    pytest.importorskip("sds_shapes")
    pytest.importorskip("sds_guidance")
    from tests.guidance.test_generate_published import NERF

    runner = CliRunner()
    model = ["--guidance", "deepfloyd-if", "--set", f"guidance.model={published_model('if-i-xl')}"]
    rows = {}
    for prompt in ("a blue torus, side view", "a red hamburger"):
        out = tmp_path / prompt[:8].replace(" ", "-")
        args = ["generate", prompt, *model, *NERF, "--steps", "2", "--device", "cpu", "--out", str(out)]
        assert runner.invoke(app, args).exit_code == 0
        rows[prompt] = runner.invoke(
            app, ["eval", "geometry", str(out), "--resolution", "24", "--json", str(out / "g.json")]
        )
    torus = rows["a blue torus, side view"]
    assert torus.exit_code == 0, torus.output
    report = json.loads((tmp_path / "a-blue-t" / "g.json").read_text())["runs"][0]
    assert report["object"] == "a blue torus" and 0.0 <= report["iou"] <= 1.0 and report["chamfer"] > 0
    other = rows["a red hamburger"]
    assert other.exit_code == 2 and "names no shapes-world object" in other.stderr
