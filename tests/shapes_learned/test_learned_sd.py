"""shapes-learned-sd: the Stable Diffusion format of the learned prior (`--format sd`): its offline
CLIP tokenizer, the autoencoder stage and the latent UNet stage (seeded, resumable), the SD folder
it exports, and the `shapes-learned-sd` guidance (the stable-diffusion backend on that folder)."""

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

from sds_core.prompts import VIEWS
from sds_shapes.world import COLOURS, PRIMITIVES, SYNONYMS
from sds_shapes_learned import sd_model, vae
from sds_shapes_learned.__main__ import main
from sds_shapes_learned.config import SD_DEFAULTS, TrainConfig
from sds_shapes_learned.train import train

# SD 1.5's format made tiny: a two-level autoencoder (16 px images to 8 x 8 x 4 latents), a
# two-level UNet (a cross-attention level and a plain one), a one-layer CLIP text transformer
TINY_SD = TrainConfig(
    format="sd",
    resolution=16,
    cameras=12,
    supersample=1,
    unet_channels=(8, 16),
    attention_head_dim=8,
    clip_width=16,
    clip_heads=2,
    clip_layers=1,
    vae_channels=(8, 8),
    vae_steps=3,
    vae_batch_size=2,
    batch_size=3,
    warmup_steps=2,
    steps=2,
    checkpoint_minutes=60.0,
    log_every=1,
)


def _tiny(tmp_path: Path, **options: object) -> TrainConfig:
    return replace(TINY_SD, out=str(tmp_path / "train"), **options)  # type: ignore[arg-type]


def test_the_clip_tokenizer_spells_every_word_of_the_world_as_one_token() -> None:
    tok = sd_model.tokenizer()
    for word in ["a", "view", *COLOURS, *PRIMITIVES, *SYNONYMS, *VIEWS]:
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    ids = tok("a red cube, side view").input_ids
    assert tok.convert_ids_to_tokens(ids)[1:-1] == ["a</w>", "red</w>", "cube</w>", ",</w>", "side</w>", "view</w>"]
    assert ids[-1] == len(tok) - 1  # the end token has the largest id, as in CLIP's vocabulary
    assert len(tok("a zebra").input_ids) > 3  # other words fall back to pieces


def test_the_format_flag_takes_the_sd_defaults_and_refuses_unknown_formats(capsys) -> None:
    from sds_shapes_learned.__main__ import config_from_args

    cfg, _, _ = config_from_args(["--format", "sd", "--steps", "7"])
    assert cfg.format == "sd" and cfg.steps == 7
    assert cfg.resolution == SD_DEFAULTS["resolution"] and cfg.unet_channels == SD_DEFAULTS["unet_channels"]
    cfg, _, _ = config_from_args(["--format", "sd", "--resolution", "32"])
    assert cfg.resolution == 32  # a flag given wins over the format's default
    assert main(["--format", "xl"]) == 2
    err = capsys.readouterr().err
    assert "--format takes one of if, sd" in err and err.count("\n") == 1


def test_the_autoencoder_stage_resumes_exactly_and_sets_ldm_scaling_factor(tmp_path) -> None:
    from sds_shapes_learned import data

    cfg = _tiny(tmp_path)
    bank = data.build_bank(cfg)
    whole = vae.VaeTrainer(cfg)
    for _ in range(3):
        whole.train_step(bank)
    first = vae.VaeTrainer(cfg)
    first.train_step(bank)
    state = first.state()
    resumed = vae.VaeTrainer(cfg)
    resumed.load(state)
    for _ in range(2):
        resumed.train_step(bank)
    for a, b in zip(whole.vae.parameters(), resumed.vae.parameters(), strict=True):
        assert torch.equal(a, b)
    scale = whole.set_scaling_factor(bank)
    generator = torch.Generator().manual_seed(cfg.seed + vae.SCALE_SEED_OFFSET)
    x = data.sample_batch(bank, cfg, 64, generator).images
    latents = whole.vae.encode(x).latent_dist.sample(generator=generator)
    assert scale == pytest.approx(1 / latents.std().item(), rel=0.2)  # one over the latents' std
    assert whole.vae.config.scaling_factor == scale and whole.done


def test_the_sd_format_trains_its_autoencoder_then_exports_a_stable_diffusion_pipeline(tmp_path) -> None:
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    trainer = train(_tiny(tmp_path))
    assert trainer is not None and trainer.vae_stage is not None
    assert trainer.vae_stage.step == 3 and [e["step"] for e in trainer.vae_stage.log] == [1, 2, 3]
    folder = tmp_path / "train" / "export"
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, feature_extractor=None)
    assert isinstance(pipe.scheduler, PNDMScheduler) and pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert pipe.unet.config.in_channels == 4 and pipe.unet.config.sample_size == 8 and pipe.vae_scale_factor == 2
    assert pipe.vae.config.scaling_factor == trainer.vae_stage.scaling_factor != 0.18215
    ema_unet, _ = trainer.ema_parts()
    for a, b in zip(pipe.unet.parameters(), ema_unet.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(pipe.vae.parameters(), trainer.vae_stage.vae.parameters(), strict=True):
        assert torch.equal(a, b)  # the autoencoder is frozen while the UNet trains
    card = (folder / "README.md").read_text()
    assert card.startswith("# shapes-learned-sd") and "--format sd --out runs/shapes-learned-sd --steps 2" in card
    assert "First the autoencoder: 3 steps of batch 2" in card and "L_vlb" not in card


def test_the_latent_stage_resumes_exactly_where_it_stopped(tmp_path) -> None:
    whole = train(_tiny(tmp_path / "a", steps=4))
    train(_tiny(tmp_path / "b", steps=2))
    resumed = train(_tiny(tmp_path / "b", steps=4))
    assert whole is not None and resumed is not None
    assert resumed.step == 4 and [e["step"] for e in resumed.log] == [1, 2, 3, 4]
    for a, b in zip(whole.unet.parameters(), resumed.unet.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [e["mse"] for e in whole.log] == [e["mse"] for e in resumed.log]


def test_a_changed_autoencoder_option_is_refused_in_one_sentence(tmp_path, capsys) -> None:
    from sds_core.errors import ConfigError

    train(_tiny(tmp_path, steps=1))
    with pytest.raises(ConfigError, match=r"autoencoder in .* was trained with other options \(vae_lr\)"):
        vae.saved(_tiny(tmp_path, steps=1, vae_lr=0.5))


def test_shapes_learned_sd_is_the_stable_diffusion_backend_on_the_shipped_folder(
    tmp_path, monkeypatch, context_factory
) -> None:
    import sds_shapes_learned.plugin
    from sds_core.plugins import load_catalog

    monkeypatch.setattr(sds_shapes_learned.plugin, "SHAPES_LEARNED_SD", tmp_path / "none")
    assert "shapes-learned-sd" not in load_catalog().registry("guidance")  # no weights, no guidance

    train(_tiny(tmp_path))
    folder = tmp_path / "train" / "export"
    monkeypatch.setattr(sds_shapes_learned.plugin, "SHAPES_LEARNED_SD", folder)
    catalog = load_catalog()
    spec, base = catalog.get("guidance", "shapes-learned-sd"), catalog.get("guidance", "stable-diffusion")
    assert spec.factory == base.factory and spec.provider == "sds-shapes-learned"
    assert base.presets["draft"]["guidance"]["resolution"] == 256
    assert spec.presets["draft"]["guidance"]["resolution"] is None  # the model's own side
    config = spec.config()
    assert config.model == str(folder) and config.background == (1.0, 1.0, 1.0)
    guidance = spec.build(config, context_factory("a red cube"))
    assert guidance.resolution == 16 and guidance.latent_resolution == 8


def test_sds_generate_runs_with_shapes_learned_sd_at_the_models_side(tmp_path, monkeypatch) -> None:
    pytest.importorskip("sds_cli")
    from typer.testing import CliRunner

    import sds_shapes_learned.plugin
    from sds_cli.app import app

    train(_tiny(tmp_path))
    folder = tmp_path / "train" / "export"
    monkeypatch.setattr(sds_shapes_learned.plugin, "SHAPES_LEARNED_SD", folder)
    out = tmp_path / "run"
    args = ["generate", "a red cube", "--generator", "image", "--guidance", "shapes-learned-sd", "--steps", "2"]
    result = CliRunner().invoke(app, [*args, "--preset", "draft", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    guidance = json.loads((out / "config.json").read_text())["config"]["guidance"]
    assert guidance["name"] == "shapes-learned-sd" and guidance["model"] == str(folder)
    assert guidance["resolution"] is None and guidance["guidance_scale"] == 100.0  # §3.2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
