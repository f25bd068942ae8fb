"""The `stable-diffusion-xl` backend on the published SDXL base architecture made small
(tests/fixtures/configs/sdxl-base.json), saved with `save_pretrained` and loaded from the folder, offline."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("diffusers")

import torch

from sds_core.errors import SdsError
from sds_core.protocols import Guidance, Render
from sds_guidance.config import StableDiffusionXLConfig
from sds_guidance.stable_diffusion_xl import StableDiffusionXLGuidance, pack, unpack

from .conftest import SIDE

FAMILY = ("sds", "csd", "nfsd", "ism", "sjc", "vsd")


def _xl(tiny_models, context_factory, prompt="a red cube", **options) -> StableDiffusionXLGuidance:
    config = StableDiffusionXLConfig(model=str(tiny_models("sdxl")), **options)
    return StableDiffusionXLGuidance(config, context_factory(prompt))


def _latents(guidance, batch=2, seed=0) -> torch.Tensor:
    side = guidance.latent_resolution
    return torch.randn(batch, 4, side, side, generator=torch.Generator().manual_seed(seed))


def _reference_embedding(folder, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What StableDiffusionXLPipeline.encode_prompt computes, by hand from the saved encoders."""
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    hidden = []
    for sub, cls in (("", CLIPTextModel), ("_2", CLIPTextModelWithProjection)):
        tokenizer = AutoTokenizer.from_pretrained(folder, subfolder=f"tokenizer{sub}", trust_remote_code=False)
        encoder = cls.from_pretrained(
            folder, subfolder=f"text_encoder{sub}", use_safetensors=True, trust_remote_code=False
        )
        ids = tokenizer([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        with torch.no_grad():
            out = encoder(ids.input_ids, output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
    return torch.cat(hidden, dim=-1), out.text_embeds


def test_sdxl_loads_from_a_folder_and_predicts(tiny_models, context_factory) -> None:
    guidance = _xl(tiny_models, context_factory)
    assert isinstance(guidance, Guidance)
    assert guidance.resolution == SIDE["sdxl"] and guidance.latent_resolution == SIDE["sdxl"] // 8
    assert (guidance.space, guidance.channels, guidance.prediction_type) == ("latent", 4, "epsilon")
    assert guidance.default_guidance_scale == 100.0  # DreamFusion §3.2
    assert guidance.scaling_factor == pytest.approx(0.13025)
    assert guidance.vae_dtype == torch.float32  # on CPU everything is float32 (force_upcast matters for fp16)
    x = _latents(guidance)
    conditioning = guidance.condition(Render(image=x, space="latent"), None)
    # 77 tokens of 48 + 80 channels (the two encoders' widths, shrunk), and the pooled row
    assert conditioning.cond.shape == (2, 78, 128)
    prediction = guidance.predict_noise(x, torch.tensor([50, 800]), conditioning)
    assert prediction.cond.shape == prediction.uncond.shape == x.shape
    assert prediction.negative is None
    assert torch.isfinite(prediction.cond).all() and not torch.allclose(prediction.cond, prediction.uncond)


def test_the_text_conditioning_is_sdxl_s(tiny_models, context_factory) -> None:
    """Penultimate hidden states of both encoders concatenated, text_encoder_2's pooled projection,
    the empty negative prompt as zeros (force_zeros_for_empty_prompt), and the size/crop time ids:
    a prediction is the UNet's own under exactly these inputs."""
    folder = tiny_models("sdxl")
    guidance = _xl(tiny_models, context_factory, view_prompts=False)
    hidden, pooled = _reference_embedding(folder, "a red cube")
    x = _latents(guidance, batch=1)
    conditioning = guidance.condition(Render(image=x, space="latent"), None)
    got_hidden, got_pooled = unpack(conditioning.cond, guidance.pooled_dim)
    torch.testing.assert_close(got_hidden, hidden)
    torch.testing.assert_close(got_pooled, pooled)
    assert torch.count_nonzero(conditioning.uncond) == 0  # SDXL base's force_zeros_for_empty_prompt
    assert guidance.time_ids.tolist() == [128.0, 128.0, 0.0, 0.0, 128.0, 128.0]
    t = torch.tensor([300])
    prediction = guidance.predict_noise(x, t, conditioning)
    added = {"text_embeds": pooled, "time_ids": torch.tensor([[128.0, 128.0, 0.0, 0.0, 128.0, 128.0]])}
    with torch.no_grad():
        by_hand = guidance.unet(x, t, encoder_hidden_states=hidden, added_cond_kwargs=added).sample
    torch.testing.assert_close(prediction.cond, by_hand)
    # the pooled text and the time ids reach the UNet: changing either changes the prediction
    with torch.no_grad():
        other_pooled = guidance.unet(
            x, t, encoder_hidden_states=hidden, added_cond_kwargs={**added, "text_embeds": pooled + 1}
        ).sample
        other_ids = guidance.unet(
            x, t, encoder_hidden_states=hidden, added_cond_kwargs={**added, "time_ids": added["time_ids"] / 2}
        ).sample
    assert not torch.allclose(other_pooled, by_hand) and not torch.allclose(other_ids, by_hand)


def test_the_prompt_and_the_resolution_change_the_prediction(tiny_models, context_factory) -> None:
    red = _xl(tiny_models, context_factory, "a red cube", view_prompts=False)
    blue = _xl(tiny_models, context_factory, "a blue ball", view_prompts=False)
    x, t = _latents(red), torch.tensor([400, 400])
    eps = {}
    for name, guidance in (("red", red), ("blue", blue)):
        eps[name] = guidance.predict_noise(x, t, guidance.condition(Render(image=x, space="latent"), None))
    assert not torch.allclose(eps["red"].cond, eps["blue"].cond)
    torch.testing.assert_close(eps["red"].uncond, eps["blue"].uncond)  # both the zeros of ""
    small = _xl(tiny_models, context_factory, resolution=64)
    assert small.time_ids.tolist() == [64.0, 64.0, 0.0, 0.0, 64.0, 64.0] and small.latent_resolution == 8
    inputs = small.unet_inputs(small.condition(Render(image=_latents(small), space="latent"), None).cond)
    assert inputs["added_cond_kwargs"]["time_ids"].shape == (2, 6)


def test_negative_prompt_and_no_zeros_are_encoded(tiny_models, context_factory) -> None:
    for options in ({"negative_prompt": "blurry"}, {"force_zeros_for_empty_prompt": False}):
        guidance = _xl(tiny_models, context_factory, **options)
        x = _latents(guidance)
        assert torch.count_nonzero(guidance.condition(Render(image=x, space="latent"), None).uncond) > 0


def test_view_prompts_and_perp_neg(tiny_models, context_factory) -> None:
    from tests.guidance.test_diffusers_backends import _cameras

    guidance = _xl(tiny_models, context_factory, perp_neg=True, perp_neg_weight=0.5)
    x = _latents(guidance)
    cameras = _cameras([0.0, 180.0], [0.0, 0.0])
    conditioning = guidance.condition(Render(image=x, space="latent"), cameras)
    assert conditioning.prompts == ["a red cube, front view", "a red cube, back view"]
    prediction = guidance.predict_noise(x, torch.tensor([200, 200]), conditioning)
    assert prediction.negative is not None and prediction.negative.shape == (2, 2, *x.shape[1:])
    torch.testing.assert_close(prediction.negative_weights, torch.full((2, 2), 0.5))


def test_rgb_renders_are_encoded_and_latents_decoded(tiny_models, context_factory) -> None:
    guidance = _xl(tiny_models, context_factory, encode="mean")
    image = torch.rand(1, 3, 32, 32, requires_grad=True)
    latents = guidance.prepare(Render(image=image, space="rgb"))
    assert latents.shape == (1, 4, 16, 16) and latents.dtype == torch.float32
    latents.sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()
    assert guidance.decode(latents.detach()).shape == (1, 3, 128, 128)


def test_vsd_lora_copy_passes_the_added_conditioning(tiny_models, context_factory) -> None:
    pytest.importorskip("peft")
    guidance = _xl(tiny_models, context_factory)
    phi = guidance.trainable_copy(rank=2, camera_dim=16)
    x = _latents(guidance)
    conditioning = guidance.condition(Render(image=x, space="latent"), None)
    t = torch.tensor([100, 600])
    eps_phi = phi(x, t, conditioning, torch.zeros(2, 16))
    # at initialisation (zero LoRA B, zero camera layer) the copy is the prior exactly
    torch.testing.assert_close(eps_phi, guidance.predict_noise(x, t, conditioning).cond)


def test_pack_round_trips() -> None:
    hidden, pooled = torch.randn(3, 5, 8), torch.randn(3, 6)
    got_hidden, got_pooled = unpack(pack(hidden, pooled), 6)
    assert torch.equal(got_hidden, hidden) and torch.equal(got_pooled, pooled)


def _generate(tiny_models, tmp_path, *extra: str):
    from typer.testing import CliRunner

    from sds_cli.app import app

    out = tmp_path / "run"
    args = ["generate", "a red hamburger", "--guidance", "stable-diffusion-xl", "--device", "cpu"]
    args += ["--set", f"guidance.model={tiny_models('sdxl')}", "--steps", "2", "--out", str(out), *extra]
    return CliRunner().invoke(app, args), out


@pytest.mark.parametrize("generator", ["image", "nerf"])
def test_generate_runs_on_sdxl(tiny_models, tmp_path, generator) -> None:
    pytest.importorskip("typer")
    if generator == "nerf":
        pytest.importorskip("sds_nerf")
        from tests.guidance.test_generate_published import NERF

        extra = ["--generator", "nerf", *NERF]
    else:
        extra = ["--generator", "image"]
    result, out = _generate(tiny_models, tmp_path, *extra)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(math.isfinite(m["loss"]) for m in metrics)
    if generator == "image":
        from PIL import Image

        with Image.open(out / "final" / "image.png") as image:
            assert image.size == (SIDE["sdxl"], SIDE["sdxl"])
    else:
        assert (out / "final" / "mesh.glb").stat().st_size > 0


@pytest.mark.parametrize("loss", FAMILY)
def test_each_loss_of_the_family_runs_on_sdxl(tiny_models, tmp_path, loss) -> None:
    """Every loss runs a step on SDXL (vsd with its LoRA copy needs peft, else it is one sentence)."""
    pytest.importorskip("typer")
    result, out = _generate(tiny_models, tmp_path, "--generator", "image", "--loss", loss)
    if loss == "vsd" and result.exit_code != 0:
        try:
            import peft  # noqa: F401
        except ImportError:
            assert result.exit_code == 2 and "peft" in result.output and "Traceback" not in result.output
            return
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["step"] == 2 and math.isfinite(last["loss"])


def test_a_hub_id_offline_is_one_sentence(context_factory, tmp_path) -> None:
    pytest.importorskip("typer")
    from typer.testing import CliRunner

    from sds_cli.app import app

    missing = "someone/not-downloaded-sdxl"
    with pytest.raises(SdsError) as info:
        StableDiffusionXLGuidance(StableDiffusionXLConfig(model=missing), context_factory("a red cube"))
    assert missing in str(info.value) and "hub cannot be reached" in str(info.value) and "\n" not in str(info.value)
    args = ["generate", "a red cube", "--guidance", "stable-diffusion-xl", "--set", f"guidance.model={missing}"]
    result = CliRunner().invoke(app, [*args, "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "hub cannot be reached" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_a_float16_run_keeps_the_force_upcast_vae_in_float32(tiny_models, context_factory) -> None:
    """The rule of `_vae_dtype` (float16 needs CUDA, so the rule is checked on the built backend)."""
    guidance = _xl(tiny_models, context_factory)
    assert guidance.vae.config.force_upcast is True
    guidance.dtype = torch.float16
    assert guidance._vae_dtype() == torch.float32
    guidance.dtype = torch.bfloat16
    assert guidance._vae_dtype() == torch.bfloat16
