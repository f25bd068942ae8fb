"""`sds generate` end to end, offline, on the published architectures made small (tests/fixtures):
Stable Diffusion 1.5, 2.1-base, 2.1 (768, v-prediction) and DeepFloyd IF-I-XL, each with the
image and the nerf generator, loaded from a saved folder by the unchanged backends."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("typer")
pytest.importorskip("sds_nerf")
from PIL import Image
from typer.testing import CliRunner

from sds_cli.app import app
from tests.nerf.test_end_to_end import SMALL_EXPORT

BACKEND = {"sd15": "stable-diffusion", "sd21-base": "stable-diffusion", "sd21-v": "stable-diffusion"}
BACKEND["if-i-xl"] = "deepfloyd-if"
# the side each model works at: SD sample_size x 8 (its VAE's 4 levels), IF the UNet's sample_size
SIDE = {"sd15": 64, "sd21-base": 64, "sd21-v": 96, "if-i-xl": 8}
# the draft nerf, small renders and exports; the draft preset's SD resolution (256) unset
NERF = ["--preset", "draft", "--set", "cameras.width=16", "--set", "cameras.height=16"]
NERF += ["--set", "guidance.resolution=null"]
NERF += [arg for key, value in SMALL_EXPORT.items() for arg in ("--set", f"generator.{key}={value}")]


@pytest.mark.parametrize("generator", ["image", "nerf"])
@pytest.mark.parametrize("name", list(BACKEND))
def test_generate_runs_on_the_published_architecture(published_model, tmp_path, name, generator) -> None:
    out = tmp_path / "run"
    args = ["generate", "a red hamburger", "--generator", generator, "--guidance", BACKEND[name]]
    args += ["--set", f"guidance.model={published_model(name)}", "--steps", "2", "--device", "cpu"]
    args += ["--out", str(out), *(NERF if generator == "nerf" else [])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(math.isfinite(m["loss"]) for m in metrics)
    if generator == "image":
        # the guidance resolution follows the model: the decoded image has the model's side
        with Image.open(out / "final" / "image.png") as image:
            assert image.size == (SIDE[name], SIDE[name])
    else:
        assert (out / "final" / "mesh.glb").stat().st_size > 0


def test_a_declared_model_background_replaces_the_mlp(published_model, tmp_path) -> None:
    """guidance.background (the backdrop of the model's training images) is what 3D generators with
    background = auto render on; undeclared, they keep the paper's MLP; a bad value is one sentence."""
    from sds_3d.background import MLPBackground, SolidBackground
    from sds_core.lifecycle import load_run

    runner = CliRunner()
    base = [
        "generate",
        "a red cube",
        "--guidance",
        "deepfloyd-if",
        "--set",
        f"guidance.model={published_model('if-i-xl')}",
    ]
    base += ["--steps", "1", "--device", "cpu", *NERF]
    backgrounds = {}
    for name, extra in (("declared", ["--set", "guidance.background=[0.0, 0.0, 1.0]"]), ("undeclared", [])):
        out = tmp_path / name
        result = runner.invoke(app, [*base, *extra, "--out", str(out)])
        assert result.exit_code == 0, result.output
        backgrounds[name] = load_run(out, "cpu").generator.background
    assert isinstance(backgrounds["declared"], SolidBackground)
    assert backgrounds["declared"].color.tolist() == [0.0, 0.0, 1.0]
    assert isinstance(backgrounds["undeclared"], MLPBackground)
    bad = runner.invoke(app, [*base, "--set", "guidance.background=[2, 0, 0]", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "guidance.background must be three numbers in [0, 1]" in bad.stderr
