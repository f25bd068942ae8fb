"""The shipped `shapes-learned` model: in the package, registered, and lifted to 3D: a short SDS
run with it (the mesh generator's draft preset, and the nerf draft with the options the README
names for this model; A.2's cameras) moves the initial blob towards the prompt's object, judged
against the true shape by `sds eval geometry`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("sds_guidance")
pytest.importorskip("sds_mesh")
pytest.importorskip("sds_cli")

from typer.testing import CliRunner

from sds_cli.app import app
from sds_shapes.plugin import SHAPES_LEARNED

# only the size of what final/ holds is shrunk; the run is the draft preset's
SMALL_EXPORT = {"texture_size": 128, "video_frames": 4, "video_resolution": 32}
PROMPT = "a red sphere"
STEPS = 300
# measured with the shipped weights (step 13,805; seed 0): IoU 0.433 after one step (the initial
# blob), 0.626 after 300 (about 1 minute on one core), 0.773 after the preset's 800. The cube
# moves less with these weights (0.365 to 0.473 in 300 steps), too close to the bar for a test.
MIN_GAIN = 0.1
# The nerf command the README names for this model: the draft preset with Magic3D's blob and
# A.2's cosine decay. Measured (sphere, seed 0): IoU 0.436 after one step (the blob), 0.834 after
# 300 (about 25 s on one core with the other busy), 0.829 after 6,000.
README_NERF = ("generator.blob=magic3d", "optim.schedule=warmup_cosine", "optim.warmup_steps=0", "optim.lr_final=5e-4")
NERF_MIN_GAIN = 0.2


def test_the_model_ships_in_the_package_and_is_registered() -> None:
    from sds_core.plugins import load_catalog

    assert (SHAPES_LEARNED / "model_index.json").is_file(), "the shapes-learned folder is missing from sds-shapes"
    weights = sum(f.stat().st_size for f in SHAPES_LEARNED.rglob("*.safetensors"))
    assert 0 < weights < 25 * 2**20  # the bound: under 25 MB
    assert (SHAPES_LEARNED / "README.md").read_text().startswith("# shapes-learned")  # the model card
    spec = load_catalog().get("guidance", "shapes-learned")
    config = spec.config()
    assert config.model == str(SHAPES_LEARNED) and config.background == (1.0, 1.0, 1.0)


def _iou(tmp_path: Path, steps: int, generator: str = "mesh", sets: tuple[str, ...] = ()) -> float:
    runner = CliRunner()
    out = tmp_path / f"{generator}-steps-{steps}"
    args = ["generate", PROMPT, "--generator", generator, "--guidance", "shapes-learned", "--preset", "draft"]
    args += ["--seed", "0"]
    args += ["--steps", str(steps), "--device", "cpu", "--out", str(out)]
    args += [a for k, v in SMALL_EXPORT.items() for a in ("--set", f"generator.{k}={v}")]
    args += [a for item in sets for a in ("--set", item)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = tmp_path / f"geometry-{generator}-{steps}.json"
    result = runner.invoke(app, ["eval", "geometry", str(out), "--json", str(report)])
    assert result.exit_code == 0, result.output
    row = json.loads(report.read_text())["runs"][0]
    assert row["object"] == PROMPT
    return float(row["iou"])


def test_sds_with_the_shipped_model_moves_the_blob_towards_the_object(tmp_path) -> None:
    start, end = _iou(tmp_path, 1), _iou(tmp_path, STEPS)
    assert end > start + MIN_GAIN, f"IoU {end:.3f} after {STEPS} steps, {start:.3f} after one"


def test_the_readme_nerf_command_lifts_the_sphere(tmp_path) -> None:
    pytest.importorskip("sds_nerf")
    start = _iou(tmp_path, 1, "nerf", README_NERF)
    end = _iou(tmp_path, STEPS, "nerf", README_NERF)
    assert end > start + NERF_MIN_GAIN, f"IoU {end:.3f} after {STEPS} steps, {start:.3f} after one"
