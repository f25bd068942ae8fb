"""The rectified-flow backends `stable-diffusion-3` and `flux` on the published SD3 medium and
FLUX.1-dev architectures made small (tests/guidance/flow_models.py), saved with `save_pretrained`
and loaded from the folder, offline; their conditioning checked against diffusers' own pipelines."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("diffusers")

import torch

from sds_core.errors import ConfigError, SdsError
from sds_core.losses.guidance_combination import guided_noise
from sds_core.losses.sds import SDSLoss
from sds_core.losses.sds_config import SDSConfig
from sds_core.protocols import BuildContext, Guidance, OwnsSchedule, Render
from sds_core.schedules import FlowSchedule
from sds_guidance.config import FluxConfig, StableDiffusion3Config
from sds_guidance.flux import FluxGuidance
from sds_guidance.stable_diffusion_3 import StableDiffusion3Guidance
from sds_guidance.stable_diffusion_xl import unpack
from tests.guidance.flow_models import FLOW, SHRUNK, tiny_config
from tests.guidance.flow_models import published as published_config

FAMILY = ("sds", "csd", "nfsd", "ism", "sjc", "vsd")
SIDE = 64  # pixels: 8 x 8 latents, 4 x 4 tokens of 2 x 2 patches (the tiny SD3's own side is 128)
BACKENDS = {"stable-diffusion-3": "sd3-medium", "flux": "flux1-dev"}


def _sd3(flow_models, context_factory, prompt="a red cube", **options) -> StableDiffusion3Guidance:
    config = StableDiffusion3Config(model=str(flow_models("sd3-medium")), embedding_cache=False, **options)
    return StableDiffusion3Guidance(config, context_factory(prompt))


def _flux(flow_models, context_factory, prompt="a red cube", **options) -> FluxGuidance:
    options.setdefault("resolution", SIDE)
    config = FluxConfig(model=str(flow_models("flux1-dev")), embedding_cache=False, **options)
    return FluxGuidance(config, context_factory(prompt))


def _latents(guidance, batch=2, seed=0) -> torch.Tensor:
    side = guidance.latent_resolution
    return torch.randn(batch, 16, side, side, generator=torch.Generator().manual_seed(seed))


# --- the published architectures made small ---------------------------------------------------


@pytest.mark.parametrize("name", FLOW)
def test_the_shrink_changes_only_sizes(name) -> None:
    source, tiny = published_config(name), tiny_config(name)
    assert len(source["_source"]) > 80 and source["_unverified"]
    t5 = "text_encoder_2" if name == "flux1-dev" else "text_encoder_3"
    for component, fields in source.items():
        if not isinstance(fields, dict) or component.startswith(("tokenizer", "scheduler")):
            assert tiny[component] == fields, component
            continue
        allowed = SHRUNK["t5" if component == t5 else "text_encoder" if "text" in component else component]
        changed = {key for key, value in fields.items() if tiny[component][key] != value}
        assert changed <= allowed, (component, changed - allowed)


# --- the flow-matching schedule -----------------------------------------------------------------


def test_the_flow_schedule_is_the_scheduler_s(flow_models, context_factory) -> None:
    """SD3: the scheduler's shifted training sigmas; FLUX: its time shift at the pipeline's mu (the
    sigmas FlowMatchEulerDiscreteScheduler.set_timesteps gives for the latent's token count)."""
    import numpy as np
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    sd3 = _sd3(flow_models, context_factory, resolution=SIDE)
    assert isinstance(sd3, OwnsSchedule) and isinstance(sd3.noise_schedule(), FlowSchedule)
    sigmas = sd3.noise_schedule().sigmas
    assert sigmas.shape == (1000,) and bool((sigmas[1:] > sigmas[:-1]).all())
    torch.testing.assert_close(sigmas[499], torch.tensor(0.75))  # shift 3: 3 s / (1 + 2 s) at s = 0.5
    torch.testing.assert_close(sigmas.flip(0) * 1000, sd3.scheduler.timesteps)

    flux = _flux(flow_models, context_factory)
    steps = 1000
    scheduler = flux.scheduler
    mu = calculate_shift((flux.latent_resolution // 2) ** 2, 256, 4096, 0.5, 1.15)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    torch.testing.assert_close(flux.noise_schedule().sigmas, scheduler.sigmas[:-1].flip(0).float())


def test_flow_schedule_readings_invert_the_forward_process() -> None:
    schedule = FlowSchedule(torch.linspace(0.01, 0.99, 1000))
    x, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    t = torch.tensor([100, 900])
    x_t = schedule.add_noise(x, eps, t)
    v = schedule.target(x, eps)
    torch.testing.assert_close(schedule.epsilon(v, x_t, t), eps)
    torch.testing.assert_close(schedule.x0(v, x_t, t), x)
    # Euler's step with the exact velocity moves along the straight path (FlowMatchEulerDiscreteScheduler.step)
    torch.testing.assert_close(
        schedule.step(x_t, v, t, torch.tensor([500, 500])), schedule.add_noise(x, eps, 500 + 0 * t)
    )
    s = schedule.sigmas[t]
    torch.testing.assert_close(schedule.weight(t, "sds"), s**2)
    torch.testing.assert_close(schedule.weight(t, "ism"), s / (1 - s))


# --- Stable Diffusion 3 ---------------------------------------------------------------------


def test_sd3_conditioning_is_the_pipeline_s(flow_models, context_factory) -> None:
    from diffusers import StableDiffusion3Pipeline

    folder = flow_models("sd3-medium")
    guidance = _sd3(flow_models, context_factory, view_prompts=False, resolution=SIDE)
    assert isinstance(guidance, Guidance)
    assert (guidance.space, guidance.channels, guidance.latent_resolution) == ("latent", 16, 8)
    assert guidance.scaling_factor == pytest.approx(1.5305) and guidance.shift_factor == pytest.approx(0.0609)
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, use_safetensors=True)
    with torch.no_grad():
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt("a red cube", None, None, negative_prompt="")
    x = _latents(guidance, batch=1)
    conditioning = guidance.condition(Render(image=x, space="latent"), None)
    hidden, got_pooled = unpack(conditioning.cond, guidance.pooled_dim)
    torch.testing.assert_close(hidden, embeds)
    torch.testing.assert_close(got_pooled, pooled)
    torch.testing.assert_close(unpack(conditioning.uncond, guidance.pooled_dim)[0], negative)
    assert hidden.shape == (1, 77 + 256, 256)  # CLIP's 77 tokens padded to T5's width, then T5's 256
    # the velocity is the transformer's at the scheduler's timestep of that sigma
    t = torch.tensor([700])
    prediction = guidance.predict_noise(x, t, conditioning)
    timestep = guidance.scheduler.timesteps[999 - 700 : 1000 - 700]
    with torch.no_grad():
        by_hand = pipe.transformer(
            hidden_states=x, timestep=timestep, encoder_hidden_states=embeds, pooled_projections=pooled
        ).sample
        uncond = pipe.transformer(
            hidden_states=x, timestep=timestep, encoder_hidden_states=negative, pooled_projections=negative_pooled
        ).sample
    torch.testing.assert_close(prediction.cond, by_hand)
    torch.testing.assert_close(prediction.uncond, uncond)
    # the pipeline's CFG: uncond + guidance_scale (cond - uncond), guidance_scale = 1 + omega
    torch.testing.assert_close(guided_noise(prediction, 6.0), uncond + 7.0 * (by_hand - uncond))


def test_sd3_drop_t5_is_the_pipeline_without_text_encoder_3(flow_models, context_factory) -> None:
    from diffusers import StableDiffusion3Pipeline

    folder = flow_models("sd3-medium")
    guidance = _sd3(flow_models, context_factory, view_prompts=False, resolution=SIDE, drop_t5=True)
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None, use_safetensors=True)
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt("a red cube", None, None, negative_prompt="")
    x = _latents(guidance, batch=1)
    hidden, got_pooled = unpack(guidance.condition(Render(image=x, space="latent"), None).cond, guidance.pooled_dim)
    torch.testing.assert_close(hidden, embeds)
    torch.testing.assert_close(got_pooled, pooled)
    assert torch.count_nonzero(hidden[:, 77:]) == 0


def test_rgb_renders_are_encoded_with_the_shift_and_decoded(flow_models, context_factory) -> None:
    guidance = _sd3(flow_models, context_factory, encode="mean", resolution=SIDE)
    image = torch.rand(1, 3, 32, 32, requires_grad=True)
    latents = guidance.prepare(Render(image=image, space="rgb"))
    assert latents.shape == (1, 16, 8, 8) and latents.dtype == torch.float32
    latents.sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()
    with torch.no_grad():
        resized = torch.nn.functional.interpolate(image, (SIDE, SIDE), mode="bilinear", align_corners=False)
        mean = guidance.vae.encode(resized * 2 - 1).latent_dist.mean
    torch.testing.assert_close(latents, (mean - 0.0609) * 1.5305)
    assert guidance.decode(latents.detach()).shape == (1, 3, SIDE, SIDE)


def test_sds_on_a_flow_prior_is_rfds(flow_models, context_factory) -> None:
    """RFDS (Yang et al., ICLR 2025): g = w(t)(v_hat(x_t) - (eps - x)), x_t = (1 - s) x + s eps, w = s^2."""
    guidance = _sd3(flow_models, context_factory, resolution=SIDE)
    context = BuildContext(device=torch.device("cpu"), prompt="a red cube", total_steps=10, guidance=guidance)
    loss = SDSLoss(SDSConfig(guidance_scale=6.0), context)
    x = _latents(guidance).requires_grad_(True)
    noise, t = torch.randn_like(x), torch.tensor([100, 800])
    conditioning = guidance.condition(Render(image=x, space="latent"), None)
    loss.compute(x, guidance, conditioning, t, noise).loss.backward()
    s = guidance.noise_schedule().sigmas[t].view(-1, 1, 1, 1)
    x0 = x.detach()
    p = guidance.predict_noise((1 - s) * x0 + s * noise, t, conditioning)
    expected = s**2 * (p.uncond + 7.0 * (p.cond - p.uncond) - (noise - x0)) / 2
    torch.testing.assert_close(x.grad, expected)


# --- FLUX.1 ----------------------------------------------------------------------------------


def test_flux_conditioning_and_prediction_are_the_pipeline_s(flow_models, context_factory) -> None:
    from diffusers import FluxPipeline

    folder = flow_models("flux1-dev")
    guidance = _flux(flow_models, context_factory, view_prompts=False)
    assert guidance.distilled_guidance and (guidance.scaling_factor, guidance.shift_factor) == (0.3611, 0.1159)
    pipe = FluxPipeline.from_pretrained(folder, use_safetensors=True)
    with torch.no_grad():
        embeds, pooled, text_ids = pipe.encode_prompt("a red cube", None)
    x = _latents(guidance, batch=1)
    conditioning = guidance.condition(Render(image=x, space="latent"), None)
    hidden, got_pooled = unpack(conditioning.cond, guidance.pooled_dim)
    torch.testing.assert_close(hidden, embeds)
    torch.testing.assert_close(got_pooled, pooled)
    t = torch.tensor([600])
    calls = []
    handle = guidance.transformer.register_forward_hook(lambda *args: calls.append(1))
    prediction = guidance.predict_noise(x, t, conditioning)
    assert len(calls) == 1 and prediction.cond is prediction.uncond  # guidance-distilled: one call
    sigma = guidance.noise_schedule().sigmas[t]
    packed = pipe._pack_latents(x, 1, 16, 8, 8)
    ids = pipe._prepare_latent_image_ids(1, 4, 4, x.device, x.dtype)
    with torch.no_grad():
        out = pipe.transformer(
            hidden_states=packed,
            timestep=sigma,
            guidance=torch.full([1], 3.5),
            pooled_projections=pooled,
            encoder_hidden_states=embeds,
            txt_ids=text_ids,
            img_ids=ids,
        ).sample
    torch.testing.assert_close(prediction.cond, pipe._unpack_latents(out, SIDE, SIDE, 8))
    true_cfg = _flux(flow_models, context_factory, view_prompts=False, cfg_mode="true-cfg")
    handle.remove()
    calls.clear()
    true_cfg.transformer.register_forward_hook(lambda *args: calls.append(x.shape[0]))
    both = true_cfg.predict_noise(x, t, true_cfg.condition(Render(image=x, space="latent"), None))
    assert len(calls) == 1 and not torch.allclose(both.cond, both.uncond)  # one call at batch 2: cond, uncond
    torch.testing.assert_close(both.cond, prediction.cond)


def test_flux_refusals_are_one_sentence(flow_models, context_factory) -> None:
    from sds_core.losses.csd import CSDLoss
    from sds_core.losses.family_config import CSDConfig, SJCConfig, VSDConfig
    from sds_core.losses.sjc import SJCLoss
    from sds_core.losses.vsd import VSDLoss

    guidance = _flux(flow_models, context_factory)
    context = BuildContext(device=torch.device("cpu"), prompt="a red cube", total_steps=10, guidance=guidance)
    with pytest.raises(
        ConfigError, match=r"'csd' loss needs the conditional and unconditional .* guidance.cfg_mode=true-cfg"
    ):
        CSDLoss(CSDConfig(), context)
    with pytest.raises(ConfigError, match=r"'sjc' loss cannot serve a flow guidance: its variance-exploding"):
        SJCLoss(SJCConfig(), context)
    with pytest.raises(ConfigError, match=r"'vsd' loss needs .*TrainableCopy"):
        VSDLoss(VSDConfig(phi="lora"), context)
    with pytest.raises(ConfigError, match=r"perp_neg needs guidance\.cfg_mode=true-cfg"):
        _flux(flow_models, context_factory, perp_neg=True)


# --- from the command line ------------------------------------------------------------------


def _generate(flow_models, tmp_path, backend: str, *extra: str):
    from typer.testing import CliRunner

    from sds_cli.app import app

    out = tmp_path / "run"
    args = ["generate", "a red hamburger", "--guidance", backend, "--device", "cpu", "--steps", "2"]
    args += ["--set", f"guidance.model={flow_models(BACKENDS[backend])}", "--out", str(out), *extra]
    args += ["--set", f"guidance.resolution={SIDE}"]
    return CliRunner().invoke(app, args), out


@pytest.mark.parametrize("generator", ["image", "nerf"])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_generate_runs_on_the_flow_models(flow_models, tmp_path, backend, generator) -> None:
    pytest.importorskip("typer")
    if generator == "nerf":
        pytest.importorskip("sds_nerf")
        from tests.guidance.test_generate_published import NERF

        extra = ["--generator", "nerf", *NERF]
    else:
        extra = ["--generator", "image"]
    result, out = _generate(flow_models, tmp_path, backend, *extra)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(math.isfinite(m["loss"]) for m in metrics)
    if generator == "image":
        from PIL import Image

        with Image.open(out / "final" / "image.png") as image:
            assert image.size == (SIDE, SIDE)
    else:
        assert (out / "final" / "mesh.glb").stat().st_size > 0


def test_generate_runs_on_sd35_s_dual_attention(flow_models, tmp_path) -> None:
    """SD 3.5 medium's MMDiT-X (dual attention, RMS-normalised queries and keys) through the same backend."""
    pytest.importorskip("typer")
    from typer.testing import CliRunner

    from sds_cli.app import app

    folder = flow_models("sd35-medium")
    transformer = json.loads((folder / "transformer" / "config.json").read_text())
    assert transformer["dual_attention_layers"] == [0] and transformer["qk_norm"] == "rms_norm"
    out = tmp_path / "run"
    args = ["generate", "a red hamburger", "--guidance", "stable-diffusion-3", "--generator", "image"]
    args += ["--set", f"guidance.model={folder}", "--set", f"guidance.resolution={SIDE}", "--steps", "2"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(math.isfinite(m["loss"]) for m in metrics)


# which loss refuses which backend kind, and the words of its sentence (docs/losses.md's table)
REFUSED = {
    ("stable-diffusion-3", "sjc"): "cannot serve a flow guidance",
    ("flux", "sjc"): "cannot serve a flow guidance",
    ("flux", "csd"): "guidance-distilled",
    ("flux", "nfsd"): "guidance-distilled",
    ("flux", "ism"): "guidance-distilled",
}


@pytest.mark.parametrize("loss", FAMILY)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_each_loss_runs_or_refuses_in_one_sentence(flow_models, tmp_path, backend, loss) -> None:
    pytest.importorskip("typer")
    result, out = _generate(flow_models, tmp_path, backend, "--generator", "image", "--loss", loss)
    refusal = REFUSED.get((backend, loss))
    if refusal is not None:
        assert result.exit_code == 2 and refusal in result.stderr, result.output
        assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
        return
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["step"] == 2 and math.isfinite(last["loss"])


@pytest.mark.parametrize("loss", ["csd", "nfsd", "ism"])
def test_flux_with_true_cfg_serves_the_two_branch_losses(flow_models, tmp_path, loss) -> None:
    pytest.importorskip("typer")
    result, _ = _generate(flow_models, tmp_path, "flux", "--generator", "image", "--loss", loss)
    assert result.exit_code == 2
    extra = ["--generator", "image", "--loss", loss, "--set", "guidance.cfg_mode=true-cfg"]
    result, _ = _generate(flow_models, tmp_path, "flux", *extra)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_hub_id_offline_is_one_sentence(context_factory, tmp_path, backend) -> None:
    pytest.importorskip("typer")
    from typer.testing import CliRunner

    from sds_cli.app import app

    missing = "someone/not-downloaded-flow"
    cls, config = (
        (StableDiffusion3Guidance, StableDiffusion3Config)
        if backend == "stable-diffusion-3"
        else (FluxGuidance, FluxConfig)
    )
    with pytest.raises(SdsError) as info:
        cls(config(model=missing), context_factory("a red cube"))  # type: ignore[operator]
    assert missing in str(info.value) and "hub cannot be reached" in str(info.value) and "\n" not in str(info.value)
    args = ["generate", "a red cube", "--guidance", backend, "--set", f"guidance.model={missing}"]
    result = CliRunner().invoke(app, [*args, "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "hub cannot be reached" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_the_flow_cost_benchmark_measures_both_modes(tmp_path) -> None:
    """benchmarks/flow_cost.py at its smallest: the distilled FLUX makes one transformer call at the
    renders' batch, true CFG one at twice the batch (no timing is asserted, only what is reported)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "flow_cost.py"
    spec = importlib.util.spec_from_file_location("flow_cost", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    record = tmp_path / "flow.json"
    rows = module.main(["--sides", "32", "--repeats", "1", "--warmup", "0", "--record", str(record)])
    assert [(r["cfg_mode"], r["transformer_calls"], r["transformer_batch"]) for r in rows] == [
        ("distilled", 1, 1),
        ("true-cfg", 1, 2),
    ]
    assert all(r["predict_ms"] > 0 and r["sds_gradient_ms"] > 0 for r in rows)
    assert json.loads(record.read_text())["rows"] == rows
