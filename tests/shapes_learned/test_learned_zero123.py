"""The Zero-1-to-3 format of the learned prior (`--format zero123`, the trainer of shapes-zero123):
pairs of views of one object with their relative camera, the objective the `zero123` backend's
conditioning matches, exact resume, and the folder it exports, which the unchanged `zero123`
backend loads and runs `sds generate --image` on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("sds_shapes_learned")
pytest.importorskip("diffusers")
pytest.importorskip("sds_guidance")
pytest.importorskip("rich")

import torch

from sds_core.api import CameraBatch
from sds_shapes_learned import data, zero123_model
from sds_shapes_learned.__main__ import config_from_args
from sds_shapes_learned.config import ZERO123_DEFAULTS, TrainConfig
from sds_shapes_learned.train import Trainer, train
from tests.shapes_learned.resume import assert_resumed_exactly

# Zero-1-to-3 XL's format made tiny: a two-level autoencoder (16 px images to 8 x 8 x 4 latents),
# a two-level UNet, a one-layer CLIP vision tower on 4 x 4 patches
TINY_ZERO123 = TrainConfig(
    format="zero123",
    resolution=16,
    cameras=12,
    supersample=1,
    unet_channels=(8, 16),
    attention_head_dim=8,
    vision_width=16,
    vision_layers=1,
    vision_heads=2,
    vision_patch=4,
    vision_projection=8,
    vae_channels=(8, 8),
    vae_steps=2,
    vae_batch_size=2,
    batch_size=3,
    warmup_steps=2,
    steps=2,
    checkpoint_minutes=60.0,
    log_every=1,
)


def _tiny(folder: Path, **options: object) -> TrainConfig:
    return replace(TINY_ZERO123, out=str(folder), **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    """Two steps of the tiny Zero-1-to-3 model (its autoencoder trained first), exported to out/export."""
    trainer = train(_tiny(tmp_path_factory.mktemp("zero123") / "train"))
    assert trainer is not None
    return trainer


def test_the_zero123_format_flag_takes_its_defaults() -> None:
    cfg, _, _ = config_from_args(["--format", "zero123"])
    assert cfg.out == ZERO123_DEFAULTS["out"] == "runs/shapes-zero123"
    assert cfg.resolution == 64 and cfg.unet_channels == (24, 48, 96, 96)


def test_pairs_show_one_object_from_two_cameras_with_the_backends_relative_camera() -> None:
    from sds_core.api import CameraConfig, CameraSampler
    from sds_guidance.zero123 import relative_camera

    cfg = TINY_ZERO123
    bank = data.build_bank(cfg)
    angles = data.bank_cameras(cfg)
    # the cameras drawn again are the bank's (build_bank draws 12 in one chunk): the same labels
    sampler = CameraSampler(replace(CameraConfig(), width=cfg.resolution, height=cfg.resolution))
    cams = sampler.sample(cfg.cameras, generator=torch.Generator().manual_seed(cfg.seed))
    assert angles.shape == (cfg.cameras, 3) and torch.equal(angles[:, 1], cams.azimuth.float())
    assert [int(v) for v in bank.views] == [data.VIEWS.index(v) for v in cams.views]
    pairs = data.sample_pairs(bank, angles, replace(cfg, caption_dropout=0.0), 6, torch.Generator().manual_seed(1))
    assert pairs.images.shape == pairs.references.shape == (6, 3, 16, 16) and not pairs.dropped.any()
    assert (pairs.target != pairs.reference).any()
    objects = (pairs.primitive, pairs.colour, pairs.mode)
    # both images are renders of the same object, from the two cameras
    assert torch.equal(pairs.images, data.render_images(bank, cfg, pairs.target, *objects) * 2 - 1)
    assert torch.equal(pairs.references, data.render_images(bank, cfg, pairs.reference, *objects) * 2 - 1)
    for i in range(6):  # the backend's relative camera of the same two cameras (the zero123 encoding)
        target, reference = _camera(angles[pairs.target[i]]), _camera(angles[pairs.reference[i]])
        assert torch.allclose(pairs.cameras[i], relative_camera(target, reference, "zero123")[0], atol=1e-6)
    dropped = data.sample_pairs(bank, angles, replace(cfg, caption_dropout=1.0), 4, torch.Generator())
    assert dropped.dropped.all()


def _camera(row: torch.Tensor) -> CameraBatch:
    from sds_core.api import CameraConfig, CameraSampler

    batch = CameraSampler(CameraConfig(width=16, height=16)).sample(1)
    batch.elevation, batch.azimuth, batch.distance = row[0:1], row[1:2], row[2:3]
    return batch


def test_the_training_normalisation_is_the_exported_processors(trained: Trainer) -> None:
    from transformers import CLIPImageProcessor

    folder = Path(trained.cfg.out) / "export"
    processor = CLIPImageProcessor.from_pretrained(folder / "feature_extractor")
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    # as the backend's set_reference calls it, on an image at the processor's side
    theirs = processor(images=[image], do_rescale=False, return_tensors="pt")["pixel_values"]
    ours = zero123_model.normalise(image[None])
    assert theirs.shape == ours.shape and torch.allclose(theirs, ours, atol=0.02)


def test_the_zero123_format_resumes_exactly_where_it_stopped(trained: Trainer, tmp_path: Path) -> None:
    train(_tiny(tmp_path / "b", steps=1))
    assert_resumed_exactly(trained, train(_tiny(tmp_path / "b", steps=2)), 2)


def test_the_export_loads_in_the_zero123_backend_as_trained(trained: Trainer, context_factory) -> None:
    """The backend's token and reference latent of a render are the trainer's (EMA weights)."""
    from sds_guidance.config import Zero123Config
    from sds_guidance.zero123 import Zero123Guidance

    folder = Path(trained.cfg.out) / "export"
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == zero123_model.PIPELINE
    guidance = Zero123Guidance(Zero123Config(model=str(folder)), context_factory(""))
    assert guidance.resolution == 16 and guidance.channels == 4
    ema_unet, ema_encoder = trained.ema_parts()
    for a, b in zip(guidance.unet.parameters(), ema_unet.parameters(), strict=True):
        assert torch.equal(a, b)
    bank = data.build_bank(trained.cfg)
    angles = data.bank_cameras(trained.cfg)
    cam = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    one = torch.zeros(12, dtype=torch.long)
    image = data.render_images(bank, trained.cfg, cam, one, one, one)  # red spheres, albedo
    guidance.set_reference(image[:1], _camera(angles[0]))
    cameras = _camera(angles[5])
    from sds_core.api import Render

    render = Render(image=image[5:6])
    cond = guidance.condition(render, cameras)
    with torch.no_grad():
        token, latent = zero123_model.condition(
            ema_encoder, trained.vae, image[:1] * 2 - 1, data.relative_cameras(angles[5:6], angles[0:1])
        )
    # the backend's processor rounds the reference to 8 bits on the way (PIL): within that step
    assert torch.allclose(cond.cond.float(), token, atol=5e-3)
    assert torch.allclose(cond.concat, latent, atol=1e-5)
    card = (folder / "README.md").read_text()
    assert card.startswith("# shapes-zero123") and "--format zero123 --out runs/shapes-zero123 --steps 2" in card
    assert "8 input channels" in card and "Pairs:" in card


def test_sds_generate_from_an_image_runs_the_zero123_backend_on_the_export(trained: Trainer, tmp_path: Path) -> None:
    pytest.importorskip("sds_cli")
    pytest.importorskip("sds_nerf")
    from PIL import Image
    from typer.testing import CliRunner

    from sds_cli.app import app

    folder = Path(trained.cfg.out) / "export"
    bank = data.build_bank(trained.cfg)
    zero = torch.zeros(1, dtype=torch.long)
    image = data.render_images(bank, trained.cfg, zero, zero, zero, zero)[0]
    path = tmp_path / "reference.png"
    Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(path)
    out = tmp_path / "run"
    args = ["generate", "--image", str(path), "--guidance", "zero123", "--generator", "nerf", "--steps", "2"]
    args += ["--set", f"guidance.model={folder}", "--set", "cameras.width=16", "--set", "cameras.height=16"]
    args += ["--set", "generator.mesh_resolution=24", "--set", 'generator.export_formats=["ply"]']
    result = CliRunner().invoke(app, [*args, "--preset", "draft", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = (out / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2 and json.loads((out / "config.json").read_text())["config"]["guidance"]["model"] == str(
        folder
    )


def _sd_folder(folder: Path) -> Path:
    """The tiny SD format model of test_learned_sd, trained two steps and exported (what --init reads)."""
    from tests.shapes_learned.test_learned_sd import TINY_SD

    sd = train(replace(TINY_SD, out=str(folder / "sd"), clip_width=TINY_ZERO123.vision_projection))
    assert sd is not None
    return folder / "sd" / "export"


def test_init_starts_from_the_sd_models_unet_and_autoencoder(tmp_path: Path) -> None:
    import diffusers

    sd_folder = _sd_folder(tmp_path)
    trainer = Trainer(_tiny(tmp_path / "z", init=str(sd_folder)))
    sd_unet = diffusers.UNet2DConditionModel.from_pretrained(sd_folder / "unet")
    sd_vae = diffusers.AutoencoderKL.from_pretrained(sd_folder / "vae")
    # the autoencoder is the folder's, with its scaling factor, and no stage of its own was trained
    assert trainer.vae.config.scaling_factor == sd_vae.config.scaling_factor
    for name, value in sd_vae.state_dict().items():
        assert torch.equal(trainer.vae.state_dict()[name], value), name
    # the first prediction is the SD UNet's whatever the reference latent (its input weights are zero)
    x_t, states = torch.randn(2, 4, 8, 8), torch.randn(2, 1, TINY_ZERO123.vision_projection)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        expected = sd_unet(x_t, t, encoder_hidden_states=states).sample
        for reference in (torch.zeros(2, 4, 8, 8), torch.randn(2, 4, 8, 8)):
            got = trainer.unet(torch.cat([x_t, reference], dim=1), t, encoder_hidden_states=states).sample
            assert torch.allclose(got, expected, atol=1e-6)
    # the camera projection starts as Zero-1-to-3's: the embedding passed through, zero bias
    projection = trainer.encoder["projection"]
    width = TINY_ZERO123.vision_projection
    assert torch.equal(projection.weight[:, :width], torch.eye(width)) and not projection.bias.any()
    # and training runs on it, with no autoencoder state written
    cfg = _tiny(tmp_path / "run", init=str(sd_folder))
    assert train(cfg) is not None
    assert not (tmp_path / "run" / "vae.pt").exists()
    card = (tmp_path / "run" / "export" / "README.md").read_text()
    assert f"--init {sd_folder}" in card and "Started from" in card


def test_init_refuses_a_folder_of_other_widths_or_another_format(tmp_path: Path) -> None:
    from sds_core.api import ConfigError

    sd_folder = _sd_folder(tmp_path)
    with pytest.raises(ConfigError, match="--unet-channels"):
        Trainer(_tiny(tmp_path / "z", init=str(sd_folder), unet_channels=(8, 16, 16)))
    with pytest.raises(ConfigError, match="neither a shipped model nor a folder"):
        Trainer(_tiny(tmp_path / "z", init=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="not a sd one"):
        train(replace(_tiny(tmp_path / "z", init=str(sd_folder)), format="sd"))
