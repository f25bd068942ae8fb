"""shapes-learned: the training data, the hybrid loss, seeded resumable training, the IF-format
folder it exports, and the `shapes-learned` guidance (the deepfloyd-if backend on that folder)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields, replace
from pathlib import Path

import pytest

pytest.importorskip("sds_shapes_learned")
pytest.importorskip("diffusers")
pytest.importorskip("sds_guidance")
pytest.importorskip("rich")

import torch

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_core.shading import SHADING_MODES
from sds_shapes.render import compose, trace_buffers
from sds_shapes.world import COLOURS
from sds_shapes_learned import data
from sds_shapes_learned.__main__ import main
from sds_shapes_learned.config import TrainConfig
from sds_shapes_learned.losses import HybridLoss
from sds_shapes_learned.train import train

# a model small enough to train a few steps in seconds; the format is the shipped one
TINY = TrainConfig(
    resolution=16,
    cameras=12,
    supersample=1,
    unet_channels=(8, 32),  # cross-attention group norm: 32 groups of the last width
    attention_head_dim=8,
    t5_width=16,
    t5_heads=2,
    t5_layers=1,
    batch_size=3,
    warmup_steps=2,
    steps=2,
    checkpoint_minutes=60.0,
    log_every=1,
)


def _flags(cfg: TrainConfig) -> list[str]:
    """cfg's options that differ from the defaults, as flags of `python -m sds_shapes_learned`."""
    flags, default = [], TrainConfig()
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name != "out" and value != getattr(default, f.name):
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            flags += [f"--{f.name.replace('_', '-')}", text]
    return flags


TINY_FLAGS = _flags(TINY)


def _tiny(tmp_path: Path, **options: object) -> TrainConfig:
    return replace(TINY, out=str(tmp_path / "train"), **options)  # type: ignore[arg-type]


def test_training_images_are_the_renders_of_their_camera_colour_and_mode() -> None:
    cfg = TINY
    bank = data.build_bank(cfg)
    sampler = CameraSampler(replace(CameraConfig(), width=cfg.resolution, height=cfg.resolution))
    cams = sampler.sample(cfg.cameras, generator=torch.Generator().manual_seed(cfg.seed))
    coverage, lit = trace_buffers(cams, cfg.supersample, primitives=cfg.primitives)
    assert [data.VIEWS[int(v)] for v in bank.views] == list(cams.views)
    background = torch.tensor(cfg.background)
    for m, mode in enumerate(SHADING_MODES):
        for c, colour in enumerate(cfg.colours):
            cam, prim = torch.tensor([5, 7]), torch.tensor([1, 3])
            got = data.render_images(bank, cfg, cam, prim, torch.tensor([c, c]), torch.tensor([m, m]))
            albedo = None if mode == "textureless" else torch.tensor([COLOURS[colour]])
            want = compose(coverage, lit, mode, albedo, background)[prim, 0, cam]
            assert (got - want).abs().max() < 2 / 255  # the bank is quantised to 8 bits


def test_captions_carry_the_object_the_view_of_the_camera_or_nothing() -> None:
    cfg = replace(TINY, caption_dropout=0.3, view_suffix_probability=0.5)
    bank = data.build_bank(cfg)
    batch = data.sample_batch(bank, cfg, 400, torch.Generator().manual_seed(0))
    assert batch.images.shape == (400, 3, 16, 16) and batch.images.min() >= -1 and batch.images.max() <= 1
    empty = sum(c == "" for c in batch.captions)
    with_view = sum(c.endswith(" view") for c in batch.captions)
    assert 80 < empty < 160 and 100 < with_view < 180  # 30% dropped; half of the rest with a view
    for caption, p, c in zip(batch.captions, batch.primitive, batch.colour, strict=True):
        if caption:
            assert caption.startswith(f"a {cfg.colours[int(c)]} {cfg.primitives[int(p)]}")


def test_hybrid_loss_bound_is_zero_for_the_true_posterior_and_trains_only_the_variance() -> None:
    from diffusers import DDPMScheduler

    from sds_shapes_learned.model import SCHEDULER

    scheduler = DDPMScheduler.from_config(SCHEDULER)
    loss = HybridLoss(scheduler.alphas_cumprod, vlb_weight=0.001)
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([1, 10, 500, 999])
    x_t = scheduler.add_noise(x0, noise, t)
    # v = -1: the posterior variance beta~_t, and the true noise: the bound's KL vanishes
    exact = torch.cat([noise, -torch.ones_like(x0)], 1)
    mse, vlb = loss(exact, x0, x_t, noise, t)
    assert mse.item() == 0 and abs(vlb.item()) < 1e-4
    wrong = torch.cat([noise + 0.1 * torch.randn_like(noise), torch.zeros_like(x0)], 1).requires_grad_()
    mse, vlb = loss(wrong, x0, x_t, noise, t)
    assert vlb.item() > 1e-3
    (grad,) = torch.autograd.grad(vlb, wrong)
    assert grad[:, :3].abs().max() == 0 and grad[:, 3:].abs().max() > 0  # epsilon is detached in L_vlb


def test_training_resumes_exactly_where_it_stopped(tmp_path) -> None:
    whole = train(_tiny(tmp_path / "a", steps=4))
    train(_tiny(tmp_path / "b", steps=2))
    resumed = train(_tiny(tmp_path / "b", steps=4))
    assert resumed.step == 4 and [e["step"] for e in resumed.log] == [1, 2, 3, 4]
    for a, b in zip(whole.unet.parameters(), resumed.unet.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [e["mse"] for e in whole.log] == [e["mse"] for e in resumed.log]
    losses = json.loads((tmp_path / "b" / "train" / "losses.json").read_text())
    assert [e["step"] for e in losses] == [1, 2, 3, 4]


def test_a_run_resumed_between_logged_steps_logs_the_means_of_an_uninterrupted_one(tmp_path) -> None:
    whole = train(_tiny(tmp_path / "a", steps=4, log_every=2))
    train(_tiny(tmp_path / "b", steps=3, log_every=2))  # stops inside the second logging window
    resumed = train(_tiny(tmp_path / "b", steps=4, log_every=2))
    assert [e["step"] for e in resumed.log] == [2, 4]
    for key in ("mse", "vlb"):
        assert [e[key] for e in whole.log] == [e[key] for e in resumed.log]
    assert resumed.window == []  # emptied at the logged step


def test_data_parallel_workers_resume_exactly_and_keep_their_own_streams(tmp_path) -> None:
    """Two worker processes (gloo): a run stopped and resumed ends where an uninterrupted one does."""
    whole = train(_tiny(tmp_path / "a", steps=4, workers=2))
    train(_tiny(tmp_path / "b", steps=2, workers=2))
    resumed = train(_tiny(tmp_path / "b", steps=4, workers=2))
    assert resumed.step == 4 and [e["step"] for e in resumed.log] == [1, 2, 3, 4]
    for a, b in zip(whole.unet.parameters(), resumed.unet.parameters(), strict=True):
        assert torch.equal(a, b)
    state = torch.load(tmp_path / "b" / "train" / "state.pt", weights_only=True)
    first, second = state["generators"]
    assert not torch.equal(first, second)  # each worker draws its own images
    # one worker resuming a two-worker state continues the first worker's stream
    single = train(_tiny(tmp_path / "b", steps=5))
    assert single.step == 5 and torch.equal(state["generator"], first)
    # the model card gives the commands of each stretch with its worker count
    card = (tmp_path / "b" / "train" / "export" / "README.md").read_text()
    assert "--workers 2 --steps 4\n" in card and "--out runs/shapes-learned --steps 5\n" in card


def test_worker_count_must_fit_the_batch(tmp_path) -> None:
    from sds_core.errors import ConfigError

    with pytest.raises(ConfigError, match="workers must be between 1 and the batch size"):
        train(_tiny(tmp_path, workers=4))


def test_resuming_with_other_options_is_refused_in_one_sentence(tmp_path, capsys) -> None:
    train(_tiny(tmp_path, steps=1))
    capsys.readouterr()
    args = ["--out", str(tmp_path / "train"), "--resolution", "16", "--cameras", "12", "--lr", "1e-3"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "trained with other options" in err and "attention_head_dim" in err and err.count("\n") == 1
    assert main(["--steps", "many"]) == 2
    assert "--steps takes" in capsys.readouterr().err


def test_a_state_saved_before_the_sd_format_options_existed_resumes(tmp_path) -> None:
    """The shipped weights' state was written before `format`, `clip_*` and `vae_*` were options:
    options missing from a saved state hold their defaults."""
    train(_tiny(tmp_path, steps=1))
    path = tmp_path / "train" / "state.pt"
    state = torch.load(path, weights_only=True)
    new = [k for k in state["config"] if k == "format" or k.startswith(("clip_", "vae_"))]
    assert len(new) == 9
    state["config"] = {k: v for k, v in state["config"].items() if k not in new}
    torch.save(state, path)
    assert train(_tiny(tmp_path, steps=2)).step == 2


def test_the_exported_folder_is_an_if_stage_one_pipeline(tmp_path) -> None:
    from diffusers import IFPipeline

    trainer = train(_tiny(tmp_path))
    folder = tmp_path / "train" / "export"
    pipe = IFPipeline.from_pretrained(folder, safety_checker=None, watermarker=None, feature_extractor=None)
    assert pipe.unet.config.out_channels == 6 and pipe.unet.config.sample_size == 16
    assert pipe.scheduler.config.variance_type == "learned_range"
    assert json.loads((folder / "training.json").read_text())["step"] == 2
    ema_unet, _ = trainer.ema_parts()
    for a, b in zip(pipe.unet.parameters(), ema_unet.parameters(), strict=True):
        assert torch.equal(a, b)
    # the tokenizer reads the world's words as one piece each
    ids = pipe.tokenizer("a red cube, side view").input_ids
    assert len(ids) == 7


def test_shapes_learned_is_the_deepfloyd_if_backend_on_the_shipped_folder(tmp_path, monkeypatch, context_factory):
    import sds_shapes_learned.plugin
    from sds_core.plugins import load_catalog

    missing = tmp_path / "none"
    monkeypatch.setattr(sds_shapes_learned.plugin, "SHAPES_LEARNED", missing)
    assert "shapes-learned" not in load_catalog().registry("guidance")  # no weights, no guidance

    train(_tiny(tmp_path))
    monkeypatch.setattr(sds_shapes_learned.plugin, "SHAPES_LEARNED", tmp_path / "train" / "export")
    catalog = load_catalog()
    spec, base = catalog.get("guidance", "shapes-learned"), catalog.get("guidance", "deepfloyd-if")
    assert spec.factory == base.factory and spec.provider == "sds-shapes-learned"
    config = spec.config()
    assert config.model == str(tmp_path / "train" / "export") and isinstance(config, base.config)
    assert config.background == (1.0, 1.0, 1.0)  # declared from the model's training.json
    guidance = spec.build(config, context_factory("a red cube"))
    assert guidance.resolution == 16 and guidance.alphas_cumprod().shape == (1000,)


def test_shipping_exports_the_saved_ema_weights_with_their_model_card(tmp_path) -> None:
    from sds_core.errors import ConfigError
    from sds_shapes_learned.train import ship

    with pytest.raises(ConfigError, match="no training state"):
        ship(_tiny(tmp_path), tmp_path / "shipped")
    train(_tiny(tmp_path, steps=3))
    shipped = tmp_path / "shipped"
    ship(_tiny(tmp_path), shipped)
    exported = tmp_path / "train" / "export"
    for part in ("unet", "text_encoder"):
        name = "diffusion_pytorch_model.safetensors" if part == "unet" else "model.safetensors"
        assert (shipped / part / name).read_bytes() == (exported / part / name).read_bytes()
    # the tokenizer too: the export of a training process writes the tokenizer as built, not the
    # one its steps called with padding (which keeps those settings in tokenizer.json)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (shipped / "tokenizer" / name).read_bytes() == (exported / "tokenizer" / name).read_bytes()
    card = (shipped / "README.md").read_text()
    assert "3 steps of batch 3" in card and "python -m sds_shapes_learned --out" in card
    # the weight files' SHA-256 lines, for `sha256sum -c` against a re-run's export
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert f"{hashlib.sha256((shipped / part).read_bytes()).hexdigest()}  {part}\n" in card
    assert "| 1-1 |" in card and "| 3-3 |" in card  # the loss curve, one row a logged step here
    # figures measured on the weights go into the card with them
    figures = tmp_path / "figures.md"
    figures.write_text("## Figures\n- samples both 0.5\n", encoding="utf-8")
    assert main(["--out", str(tmp_path / "train"), *TINY_FLAGS, "--ship", str(shipped), "--figures", str(figures)]) == 0
    card = (shipped / "README.md").read_text()
    assert card.rstrip().endswith("## Figures\n- samples both 0.5") and "## Loss curve" in card


def test_figures_go_with_ship_and_must_be_readable(tmp_path, capsys) -> None:
    train(_tiny(tmp_path, steps=1))
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "train"), *TINY_FLAGS, "--figures", str(tmp_path / "f.md")]) == 2
    assert "--figures goes with --ship" in capsys.readouterr().err
    (tmp_path / "f.md").write_bytes(b"\xff\xfe not utf-8 \xff")
    args = ["--out", str(tmp_path / "train"), *TINY_FLAGS, "--ship", str(tmp_path / "s"), "--figures"]
    assert main([*args, str(tmp_path / "f.md")]) == 2
    err = capsys.readouterr().err
    assert "is not a readable UTF-8 text file" in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_a_fresh_first_worker_keeps_the_random_stream_after_initialisation(tmp_path) -> None:
    """The first stretch of the shipped weights was trained by a trainer that did not re-seed the
    global generator after building the model; the card's command must draw the same dropout."""
    from sds_shapes_learned import model
    from sds_shapes_learned.train import Trainer

    cfg = _tiny(tmp_path)
    Trainer(cfg, 0)
    after_trainer = torch.get_rng_state()
    torch.manual_seed(cfg.seed)
    model.build(cfg)
    assert torch.equal(after_trainer, torch.get_rng_state())
    Trainer(cfg, 1)  # another worker draws its own dropout
    assert not torch.equal(after_trainer, torch.get_rng_state())


def test_sds_generate_runs_with_shapes_learned(tmp_path, monkeypatch) -> None:
    pytest.importorskip("sds_cli")
    from typer.testing import CliRunner

    import sds_shapes_learned.plugin
    from sds_cli.app import app

    train(_tiny(tmp_path))
    folder = tmp_path / "train" / "export"
    monkeypatch.setattr(sds_shapes_learned.plugin, "SHAPES_LEARNED", folder)
    out = tmp_path / "run"
    args = ["generate", "a red cube", "--generator", "image", "--guidance", "shapes-learned", "--steps", "2"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    guidance = json.loads((out / "config.json").read_text())["config"]["guidance"]
    assert guidance["name"] == "shapes-learned" and guidance["model"] == str(folder)
    assert guidance["background"] == [1.0, 1.0, 1.0]  # the backdrop of its training renders
    assert guidance["guidance_scale"] == 100.0  # the deepfloyd-if defaults otherwise (§3.2)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
