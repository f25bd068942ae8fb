"""`sds export` and `sds eval` of a Stable Diffusion run never load the model: the run is loaded
for inference from its checkpoint (`sds_core.lifecycle.load_run`), so a guidance whose loading
fails (here: any attempt to build StableDiffusionGuidance) does not matter."""

from __future__ import annotations

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("typer")
pytest.importorskip("sds_nerf")
from typer.testing import CliRunner

from sds_cli.app import app
from tests.guidance.test_generate_published import NERF


def test_export_and_eval_of_a_stable_diffusion_run_do_not_load_the_unet(published_model, tmp_path, monkeypatch):
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["generate", "a red hamburger", "--generator", "nerf", "--guidance", "stable-diffusion"]
    args += ["--set", f"guidance.model={published_model('sd21-base')}", "--steps", "2", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--out", str(out), *NERF])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"

    from sds_guidance.stable_diffusion import StableDiffusionGuidance

    def fail(self, config, context):
        raise AssertionError("the Stable Diffusion model was loaded")

    monkeypatch.setattr(StableDiffusionGuidance, "__init__", fail)
    (out / "final" / "mesh.ply").unlink()
    exported = runner.invoke(app, ["export", str(out), "--format", "ply,gif", "--device", "cpu"])
    assert exported.exit_code == 0, f"{exported.output}\n{exported.exception!r}"
    assert (out / "final" / "mesh.ply").stat().st_size > 0

    from sds_eval.renders import render_run

    renders = render_run(out, views=2, resolution=16, device="cpu")
    assert renders.color.shape == (2, 3, 16, 16) and renders.geometry is not None
    geometry = runner.invoke(app, ["eval", "geometry", str(out)])
    assert geometry.exit_code == 2 and "names no shapes-world object" in geometry.stderr
