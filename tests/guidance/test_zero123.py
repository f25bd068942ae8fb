"""The `zero123` guidance on the published Zero-1-to-3 XL architecture made small
(tests/fixtures/configs/zero123-xl.json, tests/guidance/zero123_models.py), saved component by
component and loaded from the folder offline; `sds generate --image` with it on nerf, mesh and
gaussians."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import torch

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_core.errors import SdsError
from sds_core.protocols import CameraBatch, Guidance, Render
from sds_guidance.config import Zero123Config
from sds_guidance.zero123 import Zero123Guidance, relative_camera


@pytest.fixture(scope="session")
def zero123_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.guidance.zero123_models import build

    return build(tmp_path_factory.mktemp("zero123-xl"))


@pytest.fixture(scope="session")
def ball_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A red disc on a white background (RGB: the foreground is found by the border's colour)."""
    from PIL import Image, ImageDraw

    path = tmp_path_factory.mktemp("images") / "ball.png"
    image = Image.new("RGB", (48, 48), (255, 255, 255))
    ImageDraw.Draw(image).ellipse((12, 10, 36, 38), fill=(200, 30, 30))
    image.save(path)
    return path


def _cameras(elevation: list[float], azimuth: list[float], distance: float = 2.0) -> CameraBatch:
    sampler = CameraSampler(CameraConfig(width=16, height=16))
    batch = sampler.sample(len(elevation))
    batch.elevation, batch.azimuth = torch.tensor(elevation), torch.tensor(azimuth)
    batch.distance = torch.full((len(elevation),), distance)
    return batch


def _guidance(folder: Path, context_factory, **options) -> Zero123Guidance:
    guidance = Zero123Guidance(Zero123Config(model=str(folder), **options), context_factory(""))
    guidance.set_reference(torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0)), _cameras([0.0], [0.0]))
    return guidance


def test_relative_camera_of_both_encodings() -> None:
    """Zero-1-to-3's [d_polar, sin d_az, cos d_az, d_radius]; Stable Zero123's last slot the
    reference's polar angle (threestudio's zero123 / stable_zero123 guidance)."""
    reference = _cameras([10.0], [30.0], 2.0)
    views = _cameras([40.0, 10.0], [120.0, 30.0], 2.5)
    got = relative_camera(views, reference, "zero123")
    want = torch.tensor([[math.radians(-30.0), 1.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.5]])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    stable = relative_camera(views, reference, "stable-zero123")
    torch.testing.assert_close(stable[:, :3], want[:, :3], atol=1e-6, rtol=0)
    torch.testing.assert_close(stable[:, 3], torch.full((2,), math.radians(80.0)))


def test_loads_and_predicts_with_image_cfg(zero123_model, context_factory) -> None:
    """The prediction is the UNet's own on [x_t, reference latent] under the projected token, and
    the unconditional branch the UNet's on zeros of both (classifier-free guidance over the image)."""
    guidance = _guidance(zero123_model, context_factory)
    assert isinstance(guidance, Guidance)
    assert (guidance.space, guidance.channels, guidance.resolution, guidance.latent_resolution) == ("latent", 4, 32, 4)
    assert guidance.default_guidance_scale == 2.0 and guidance.background == (1.0, 1.0, 1.0)
    assert guidance.num_train_timesteps == 1000 and guidance.alphas_cumprod().shape == (1000,)
    image = torch.rand(2, 3, 16, 16, requires_grad=True)
    render = Render(image=image)
    x = guidance.prepare(render)
    x.sum().backward()
    assert x.shape == (2, 4, 4, 4) and image.grad is not None and torch.isfinite(image.grad).all()
    views = _cameras([0.0, 30.0], [90.0, 200.0])
    conditioning = guidance.condition(render, views)
    t = torch.tensor([100, 700])
    x = x.detach()
    prediction = guidance.predict_noise(x, t, conditioning)
    camera = relative_camera(views, guidance.reference, "zero123")
    with torch.no_grad():
        token = guidance.projection(torch.cat([guidance.image_embeds.expand(2, -1), camera], -1))[:, None]
        latent = guidance.reference_latent.expand(2, -1, -1, -1)
        cond = guidance.unet(torch.cat([x, latent], 1), t, encoder_hidden_states=token).sample
        uncond = guidance.unet(torch.cat([x, torch.zeros_like(latent)], 1), t, torch.zeros_like(token)).sample
    torch.testing.assert_close(prediction.cond, cond)
    torch.testing.assert_close(prediction.uncond, uncond)
    other = guidance.predict_noise(x, t, guidance.condition(render, _cameras([0.0, 30.0], [0.0, 20.0])))
    assert not torch.allclose(other.cond, prediction.cond)  # the camera reaches the UNet
    torch.testing.assert_close(other.uncond, prediction.uncond)


def test_a_stable_zero123_port_layout_loads(zero123_model, context_factory, tmp_path) -> None:
    folder = tmp_path / "stable-zero123"
    shutil.copytree(zero123_model, folder)
    (folder / "cc_projection").rename(folder / "clip_camera_projection")
    guidance = _guidance(folder, context_factory, camera_encoding="stable-zero123")
    x = torch.zeros(1, 4, 4, 4)
    prediction = guidance.predict_noise(
        x, torch.tensor([500]), guidance.condition(Render(image=x, space="latent"), _cameras([20.0], [45.0]))
    )
    assert torch.isfinite(prediction.cond).all()
    shutil.rmtree(folder / "clip_camera_projection")
    with pytest.raises(SdsError, match="no camera projection folder"):
        Zero123Guidance(Zero123Config(model=str(folder)), context_factory(""))


def test_a_hub_id_offline_is_one_sentence(context_factory) -> None:
    missing = "someone/not-downloaded-zero123"
    with pytest.raises(SdsError) as info:
        Zero123Guidance(Zero123Config(model=missing), context_factory(""))
    assert "hub cannot be reached" in str(info.value) and "\n" not in str(info.value)


def _generate(args: list[str]):
    from typer.testing import CliRunner

    from sds_cli.app import app

    return CliRunner().invoke(app, args)


SMALL = ["--preset", "draft", "--set", "cameras.width=16", "--set", "cameras.height=16", "--device", "cpu"]
SMALL += ["--set", 'generator.export_formats=["ply"]']
EXTRA = {
    "nerf": ["--set", "generator.mesh_resolution=24", "--set", "generator.mesh_threshold=1.0"],
    "mesh": [],
    "gaussians": [],
}


@pytest.mark.parametrize("generator", ["nerf", "mesh", "gaussians"])
def test_generate_from_an_image(zero123_model, ball_png, tmp_path, generator) -> None:
    """Two steps of SDS with the reference-view terms on each 3D generator; the run folder keeps
    the image, config.json its SHA-256, and `sds resume` checks it."""
    pytest.importorskip(f"sds_{generator}")
    out = tmp_path / "run"
    args = ["generate", "--image", str(ball_png), "--guidance", "zero123", "--generator", generator]
    args += ["--set", f"guidance.model={zero123_model}", "--steps", "2", "--out", str(out), *SMALL]
    result = _generate([*args, *EXTRA[generator]])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(math.isfinite(m["loss"]) for m in metrics)
    assert all(m["ref_rgb"] > 0 and m["ref_mask"] > 0 for m in metrics)
    record = json.loads((out / "config.json").read_text())
    digest = hashlib.sha256(ball_png.read_bytes()).hexdigest()
    assert record["image"] == {"file": "reference.png", "sha256": digest, "source": str(ball_png)}
    assert (out / "reference.png").read_bytes() == ball_png.read_bytes()
    assert record["config"]["generator"]["albedo_only_steps"] == 100_000  # the recipe: albedo renders
    assert record["config"]["cameras"]["distance_range"] == [2.0, 2.0]
    if generator != "nerf":
        return
    (out / "reference.png").write_bytes(b"\x89PNG another image")
    resumed = _generate(["resume", str(out), "--steps", "3", "--device", "cpu"])
    assert resumed.exit_code == 2 and "SHA-256" in resumed.stderr and "Traceback" not in resumed.output
    shutil.copyfile(ball_png, out / "reference.png")
    resumed = _generate(["resume", str(out), "--steps", "3", "--device", "cpu"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3


def _refused(args: list[str], tmp_path: Path) -> str:
    out = tmp_path / "refused"
    result = _generate(["generate", *args, "--steps", "1", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # a refused run leaves nothing
    return result.stderr


def test_bad_images_and_pairings_are_one_sentence(ball_png, tmp_path) -> None:
    import numpy as np
    from PIL import Image

    noise = tmp_path / "noise.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8")).save(noise)
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    image = ["--guidance", "zero123", "--image"]
    assert "does not exist" in _refused([*image, str(tmp_path / "missing.png")], tmp_path)
    assert "not a PNG, JPEG or WebP" in _refused([*image, str(damaged)], tmp_path)
    assert "no plain background" in _refused([*image, str(noise)], tmp_path)
    assert "text-only" in _refused(["--image", str(ball_png), "--guidance", "stable-diffusion"], tmp_path)
    assert "pass one with --image" in _refused(["a red ball", "--guidance", "zero123"], tmp_path)
    assert "give a prompt" in _refused(["--guidance", "shapes"], tmp_path)


def test_text_only_losses_are_refused_in_one_sentence(zero123_model, ball_png, tmp_path) -> None:
    """NFSD needs a free negative text, which an image prior cannot encode (NegativePrompting)."""
    args = ["--image", str(ball_png), "--guidance", "zero123", "--set", f"guidance.model={zero123_model}"]
    assert "NegativePrompting" in _refused([*args, "--loss", "nfsd", "--generator", "nerf"], tmp_path)
