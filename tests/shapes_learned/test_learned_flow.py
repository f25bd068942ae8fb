"""The Stable Diffusion 3 format of the learned prior (`--format sd3`, shapes-learned-flow): the
16-channel autoencoder stage with SD3's scaling and shift factors, the rectified-flow objective,
exact resume, the SD3 folder it exports (loaded by StableDiffusion3Pipeline and by the
`stable-diffusion-3` backend unchanged), the benchmark's flow sampling of it, and how its
registration reads the folder's training.json."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("sds_shapes_learned")
pytest.importorskip("diffusers")
pytest.importorskip("sds_guidance")
pytest.importorskip("rich")

import torch

from sds_core.api import ConfigError
from sds_shapes_learned import data, sd3_model, vae
from sds_shapes_learned.config import SD3_DEFAULTS, TrainConfig
from sds_shapes_learned.train import Trainer, train
from tests.shapes_learned.resume import assert_resumed_exactly

ROOT = Path(__file__).resolve().parents[2]
# SD3 medium's format made tiny: a two-level 16-channel autoencoder (16 px images to 8 x 8 x 16
# latents, 4 x 4 patches of 2 x 2), one joint layer of 2 heads of 8, one-layer CLIP L and G
TINY_SD3 = TrainConfig(
    format="sd3",
    resolution=16,
    cameras=12,
    supersample=1,
    clip_width=16,
    clip_heads=2,
    clip_layers=1,
    openclip_width=16,
    openclip_layers=1,
    mmdit_layers=1,
    mmdit_heads=2,
    mmdit_head_dim=8,
    joint_attention_dim=32,
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
    return replace(TINY_SD3, out=str(folder), **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    """Two steps of the tiny SD3 model (its autoencoder trained first), exported to out/export."""
    trainer = train(_tiny(tmp_path_factory.mktemp("flow") / "train"))
    assert trainer is not None
    return trainer


def test_the_sd3_format_flag_takes_its_defaults() -> None:
    from sds_shapes_learned.__main__ import config_from_args

    cfg, _, _ = config_from_args(["--format", "sd3", "--steps", "5"])
    assert cfg.format == "sd3" and cfg.steps == 5
    assert cfg.resolution == SD3_DEFAULTS["resolution"] and cfg.out == SD3_DEFAULTS["out"]
    config = sd3_model.transformer_config(cfg)  # SD3 medium's fields, narrowed
    assert config["patch_size"] == 2 and config["in_channels"] == config["out_channels"] == 16
    assert config["sample_size"] == 8 and config["pos_embed_max_size"] == 12  # SD3: 128 and 192
    assert config["caption_projection_dim"] == cfg.mmdit_heads * cfg.mmdit_head_dim
    assert config["pooled_projection_dim"] == cfg.clip_width + cfg.openclip_width
    with pytest.raises(ConfigError, match=r"joint_attention_dim \(64\) must hold both CLIPs' states"):
        sd3_model.build(replace(cfg, joint_attention_dim=64))


def test_the_autoencoder_stage_sets_sd3_scaling_and_shift_factors(trained: Trainer) -> None:
    stage = trained.vae_stage
    assert stage is not None and stage.done and stage.vae.config.latent_channels == 16
    assert not stage.vae.config.use_quant_conv and not stage.vae.config.use_post_quant_conv
    cfg = trained.cfg
    bank = data.build_bank(cfg, cache=Path(cfg.out))
    generator = torch.Generator().manual_seed(cfg.seed + vae.SCALE_SEED_OFFSET)
    latents = torch.cat(
        [
            stage.vae.encode(data.sample_batch(bank, cfg, 64, generator).images).latent_dist.sample(generator=generator)
            for _ in range(vae.SCALE_IMAGES // 64)
        ]
    )
    z = (latents - stage.vae.config.shift_factor) * stage.vae.config.scaling_factor
    assert abs(z.mean().item()) < 1e-5 and z.std().item() == pytest.approx(1.0, abs=1e-5)
    assert stage.shift_factor != 0.0609 and stage.scaling_factor != 1.5305  # SD3 medium's, replaced
    reloaded = vae.trained(cfg)  # the factors travel with the stage's state
    assert (reloaded.shift_factor, reloaded.scaling_factor) == (stage.shift_factor, stage.scaling_factor)
    assert reloaded.vae.config.shift_factor == stage.shift_factor


def test_the_flow_loss_is_rectified_flow_at_logit_normal_times(trained: Trainer) -> None:
    x0 = torch.randn(3, 16, 8, 8)
    seen: dict[str, torch.Tensor] = {}
    real = trained.unet

    def transformer(**inputs: torch.Tensor) -> object:
        seen.update(inputs)
        return real(**inputs)

    trained.unet = transformer
    try:
        start = trained.generator.get_state()
        loss = trained.flow_loss(x0, ["a red cube", "", "a blue torus, side view"])
    finally:
        trained.unet = real
        trained.generator.set_state(start)  # the fixture's stream as training left it
    generator = torch.Generator().set_state(start)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.sigmoid(torch.randn(3, generator=generator))  # logit-normal, m 0, s 1
    assert torch.equal(seen["timestep"], t * 1000)
    assert torch.allclose(seen["hidden_states"], (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * noise)
    with torch.no_grad():
        velocity = real(**seen).sample
    assert loss.item() == pytest.approx((velocity - (noise - x0)).pow(2).mean().item(), rel=1e-6)
    states, pooled = seen["encoder_hidden_states"], seen["pooled_projections"]
    assert states.shape == (3, 77 + TINY_SD3.t5_tokens, 32) and pooled.shape == (3, 32)
    assert not states[:, 77:].any() and not states[:, :77, 32:].any()  # T5's tokens are zeros


def test_the_sd3_format_resumes_exactly_where_it_stopped(trained: Trainer, tmp_path: Path) -> None:
    train(_tiny(tmp_path / "b", steps=1))
    assert_resumed_exactly(trained, train(_tiny(tmp_path / "b", steps=2)), 2)


def test_the_export_is_an_sd3_pipeline_whose_prompts_encode_as_in_training(trained: Trainer) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    folder = Path(trained.cfg.out) / "export"
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and pipe.scheduler.config.shift == 3.0
    assert pipe.transformer.config.patch_size == 2 and pipe.vae.config.latent_channels == 16
    assert pipe.vae.config.shift_factor == trained.vae_stage.shift_factor  # type: ignore[union-attr]
    ema_transformer, ema_encoders = trained.ema_parts()
    for a, b in zip(pipe.transformer.parameters(), ema_transformer.parameters(), strict=True):
        assert torch.equal(a, b)
    # the pipeline's own encode_prompt (no T5) gives what the transformer was trained on
    with torch.no_grad():
        states, _, pooled, _ = pipe.encode_prompt(
            "a red cube", "a red cube", None, do_classifier_free_guidance=False, max_sequence_length=256
        )
        trained.encoder, kept = ema_encoders, trained.encoder
        try:
            ours, ours_pooled = trained.encode_flow(["a red cube"])
        finally:
            trained.encoder = kept
    # the pipeline pads CLIP's states to T5's width, which it reads from the transformer's joint width
    assert torch.allclose(states, ours, atol=1e-6) and torch.allclose(pooled, ours_pooled, atol=1e-6)
    card = (folder / "README.md").read_text()
    assert card.startswith("# shapes-learned-flow") and "--format sd3 --out runs/shapes-learned-flow --steps 2" in card
    assert "velocity MSE" in card and "shift factor" in card and "drop_t5" in card


def test_sds_generate_runs_the_stable_diffusion_3_backend_on_the_export(trained: Trainer, tmp_path: Path) -> None:
    pytest.importorskip("sds_cli")
    from typer.testing import CliRunner

    from sds_cli.app import app

    folder = Path(trained.cfg.out) / "export"
    out = tmp_path / "run"
    # T5 absent: the backend's drop_t5 (its tokens zeros); renders at the model's side, not draft's 256
    sets = [f"guidance.model={folder}", "guidance.drop_t5=true", "guidance.resolution=16"]
    args = ["generate", "a red cube", "--generator", "image", "--guidance", "stable-diffusion-3", "--steps", "2"]
    args += [a for s in sets for a in ("--set", s)]
    result = CliRunner().invoke(app, [*args, "--preset", "draft", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    guidance = json.loads((out / "config.json").read_text())["config"]["guidance"]
    assert guidance["name"] == "stable-diffusion-3" and guidance["model"] == str(folder)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_the_benchmark_samples_an_sd3_folder_by_flow_euler_steps(trained: Trainer) -> None:
    spec = importlib.util.spec_from_file_location("learned_shapes", ROOT / "benchmarks" / "learned_shapes.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder = Path(trained.cfg.out) / "export"
    assert bench.is_sd3(folder) and bench.is_stable_diffusion(folder)
    images = bench.sample_model(folder, ["a red cube", "a blue torus"], 2, 3.0, seed=0)
    assert images.shape == (2, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
    again = bench.sample_model(folder, ["a red cube", "a blue torus"], 2, 3.0, seed=0)
    assert torch.equal(images, again)  # seeded
    # `--sds` runs it through the stable-diffusion-3 backend as the generate test above does
    backend = bench.learned_backend(folder, trained.cfg)
    assert backend[0] == "stable-diffusion-3"
    assert {"guidance.drop_t5=true", "guidance.resolution=16", "guidance.max_sequence_length=256"} <= set(backend)


@pytest.mark.parametrize(
    ("text", "tokens", "background"),
    [
        ('{"config": {"t5_tokens": 8, "background": [0, 0, 0]}}', 8, (0.0, 0.0, 0.0)),
        ('{"config": {"t5_tokens": "8", "background": "white"}}', 32, (1.0, 1.0, 1.0)),
        ('{"config": {"t5_tokens": true, "background": [1, 2]}}', 32, (1.0, 1.0, 1.0)),
        ('{"config": [1, 2]}', 32, (1.0, 1.0, 1.0)),
        ('{"config": {"t5_tokens": 1000000000}}', 32, (1.0, 1.0, 1.0)),
        ("not json", 32, (1.0, 1.0, 1.0)),
    ],
)
def test_the_registration_reads_a_hostile_training_json_safely(tmp_path: Path, text, tokens, background) -> None:
    from sds_shapes_learned.plugin import _t5_tokens, _training_background

    (tmp_path / "training.json").write_text(text)
    assert _t5_tokens(tmp_path) == tokens and _training_background(tmp_path) == background
