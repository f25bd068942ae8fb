"""Stable Diffusion and DeepFloyd IF backends on tiny pipelines loaded from a folder, offline."""

from __future__ import annotations

import pytest

pytest.importorskip("diffusers")

import torch

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_core.errors import ConfigError, SdsError
from sds_core.losses.guidance_combination import guided_noise
from sds_core.losses.sds import SDSLoss
from sds_core.losses.sds_config import SDSConfig
from sds_core.protocols import Guidance, Render
from sds_guidance.config import DeepFloydIFConfig, StableDiffusionConfig
from sds_guidance.deepfloyd_if import DeepFloydIFGuidance
from sds_guidance.stable_diffusion import StableDiffusionGuidance

from .conftest import SIDE

OMEGA = 7.5


def _sd(tiny_models, context_factory, kind="sd-epsilon", prompt="a red cube", **options) -> StableDiffusionGuidance:
    config = StableDiffusionConfig(model=str(tiny_models(kind)), **options)
    return StableDiffusionGuidance(config, context_factory(prompt))


def _cameras(azimuths, elevations) -> object:
    cfg = CameraConfig()
    sampler = CameraSampler(cfg)
    cams = sampler.orbit(len(azimuths), elevation=0.0)
    from sds_core.cameras import view_labels

    az = torch.tensor(azimuths, dtype=torch.float32)
    el = torch.tensor(elevations, dtype=torch.float32)
    cams.azimuth, cams.elevation = az, el
    cams.views = view_labels(el, az, cfg)
    return cams


def _by_hand_gradient(guidance, x, t, noise, conditioning) -> torch.Tensor:
    """w(t)(eps_cfg - eps) from two separate UNet calls, converting v to eps by hand."""
    a = guidance.alphas_cumprod()[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x + (1 - a).sqrt() * noise
    with torch.no_grad():
        out_c = guidance.unet(x_t, t, encoder_hidden_states=conditioning.cond).sample
        out_u = guidance.unet(x_t, t, encoder_hidden_states=conditioning.uncond).sample
    out_c, out_u = out_c[:, : x.shape[1]], out_u[:, : x.shape[1]]  # IF: drop the variance half
    if guidance.prediction_type == "v_prediction":
        out_c = a.sqrt() * out_c + (1 - a).sqrt() * x_t
        out_u = a.sqrt() * out_u + (1 - a).sqrt() * x_t
    eps_hat = out_u + (1 + OMEGA) * (out_c - out_u)
    return (1 - a) * (eps_hat - noise)


@pytest.mark.parametrize("kind", ["sd-epsilon", "sd-v"])
def test_sd_latent_sds_gradient_matches_hand_computation(tiny_models, context_factory, kind) -> None:
    guidance = _sd(tiny_models, context_factory, kind)
    assert isinstance(guidance, Guidance)
    assert guidance.prediction_type == ("epsilon" if kind == "sd-epsilon" else "v_prediction")
    side = SIDE[kind] // 8  # the model's own: sample_size latents, sample_size x 8 pixels
    assert (guidance.space, guidance.channels, guidance.latent_resolution) == ("latent", 4, side)
    assert guidance.resolution == SIDE[kind]
    assert guidance.default_guidance_scale == 100.0  # §3.2
    torch.manual_seed(1)
    latents = torch.randn(2, 4, side, side, requires_grad=True)
    render = Render(image=latents, space="latent")
    x = guidance.prepare(render)
    assert x is latents
    conditioning = guidance.condition(render, None)
    t = torch.tensor([100, 700])
    noise = torch.randn_like(latents)
    loss = SDSLoss(SDSConfig(guidance_scale=OMEGA), context_factory("a red cube")).compute(
        x, guidance, conditioning, t, noise
    )
    loss.loss.backward()
    expected = _by_hand_gradient(guidance, latents.detach(), t, noise, conditioning)
    assert expected.abs().max() > 1e-4
    torch.testing.assert_close(latents.grad, expected / 2, rtol=1e-4, atol=1e-6)


def test_sd_rgb_renders_are_resized_and_vae_encoded_with_gradient(tiny_models, context_factory) -> None:
    guidance = _sd(tiny_models, context_factory, encode="mean")
    torch.manual_seed(2)
    pixels = torch.rand(1, 3, 8, 8, requires_grad=True)  # smaller than the model: resized up
    x = guidance.prepare(Render(image=pixels))
    side = SIDE["sd-epsilon"]
    assert x.shape == (1, 4, side // 8, side // 8)
    resized = torch.nn.functional.interpolate(pixels.detach(), (side, side), mode="bilinear")
    with torch.no_grad():
        direct = guidance.vae.encode(resized * 2 - 1).latent_dist.mean * guidance.scaling_factor
    torch.testing.assert_close(x.detach(), direct)
    t, noise = torch.tensor([500]), torch.randn_like(x)
    conditioning = guidance.condition(Render(image=pixels), None)
    loss = SDSLoss(SDSConfig(guidance_scale=OMEGA), context_factory("a red cube")).compute(
        x, guidance, conditioning, t, noise
    )
    loss.loss.backward()
    grad_latent = _by_hand_gradient(guidance, x.detach(), t, noise, conditioning)
    (expected,) = torch.autograd.grad(guidance.prepare(Render(image=pixels)), pixels, grad_latent)
    assert pixels.grad is not None and pixels.grad.abs().max() > 0
    torch.testing.assert_close(pixels.grad, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
    decoded = guidance.decode(x.detach())
    assert decoded.shape == (1, 3, side, side) and decoded.min() >= 0 and decoded.max() <= 1


def test_if_sds_gradient_keeps_the_eps_half(tiny_models, context_factory) -> None:
    config = DeepFloydIFConfig(model=str(tiny_models("if")))
    guidance = DeepFloydIFGuidance(config, context_factory("a blue torus"))
    assert isinstance(guidance, Guidance)
    side = SIDE["if"]  # the UNet's sample_size
    assert (guidance.space, guidance.channels, guidance.resolution) == ("rgb", 3, side)
    torch.manual_seed(3)
    pixels = torch.rand(2, 3, 2 * side, 2 * side, requires_grad=True)  # resized down
    render = Render(image=pixels)
    x = guidance.prepare(render)
    assert x.shape == (2, 3, side, side) and x.min() >= -1 and x.max() <= 1
    conditioning = guidance.condition(render, None)
    prediction = guidance.predict_noise(x.detach(), torch.tensor([10, 900]), conditioning)
    assert prediction.cond.shape == x.shape  # 6 output channels, eps half kept
    x_leaf = x.detach().requires_grad_(True)
    t, noise = torch.tensor([10, 900]), torch.randn_like(x)
    loss = SDSLoss(SDSConfig(guidance_scale=OMEGA), context_factory("a blue torus")).compute(
        x_leaf, guidance, conditioning, t, noise
    )
    loss.loss.backward()
    expected = _by_hand_gradient(guidance, x_leaf.detach(), t, noise, conditioning)
    assert expected.abs().max() > 1e-3
    # one UNet call at batch 4 against two at batch 2: float32 rounding of IF's group norms and
    # attention pooling differs by a few 1e-6, amplified 1 + omega times by guidance
    torch.testing.assert_close(x_leaf.grad, expected / 2, rtol=1e-3, atol=1e-5)


def test_if_embeddings_are_cached_and_the_text_encoder_is_not_reloaded(
    tiny_models, context_factory, sds_cache, monkeypatch
) -> None:
    from transformers import T5EncoderModel

    folder = str(tiny_models("if"))
    config = DeepFloydIFConfig(model=folder, negative_prompt="blurry")
    first = DeepFloydIFGuidance(config, context_factory("a green cone"))
    assert list((sds_cache / "embeddings").glob("*.safetensors"))

    def refuse(*args, **kwargs):
        raise AssertionError("the T5 encoder was loaded although every embedding is cached")

    monkeypatch.setattr(T5EncoderModel, "from_pretrained", refuse)
    second = DeepFloydIFGuidance(config, context_factory("a green cone"))
    for prompt, embedding in first.embeddings.table.items():
        torch.testing.assert_close(second.embeddings.table[prompt], embedding)
    assert "blurry" in second.embeddings.table


def test_view_dependent_prompts_follow_azimuth_and_elevation(tiny_models, context_factory) -> None:
    guidance = _sd(tiny_models, context_factory, prompt="a red cube")
    cams = _cameras([0.0, 90.0, 180.0, 300.0, 20.0, 44.0, 46.0], [10.0, 10.0, 10.0, 30.0, 75.0, 0.0, 0.0])
    render = Render(image=torch.zeros(7, 4, 8, 8), space="latent")
    conditioning = guidance.condition(render, cams)
    views = ["front", "side", "back", "side", "overhead", "front", "side"]
    assert conditioning.prompts == [f"a red cube, {v} view" for v in views]
    table = guidance.embeddings.table
    for i, prompt in enumerate(conditioning.prompts):
        torch.testing.assert_close(conditioning.cond[i], table[prompt])
        torch.testing.assert_close(conditioning.uncond[i], table[""])
    assert not torch.allclose(table["a red cube, front view"], table["a red cube, back view"])
    # a 2D generator (no cameras) gets the prompt as written
    assert guidance.condition(render, None).prompts == ["a red cube"] * 7


def test_perp_neg_adds_the_other_views_as_negatives(tiny_models, context_factory) -> None:
    guidance = _sd(tiny_models, context_factory, perp_neg=True, perp_neg_weight=0.5)
    cams = _cameras([0.0, 180.0], [10.0, 10.0])
    render = Render(image=torch.randn(2, 4, 8, 8), space="latent")
    conditioning = guidance.condition(render, cams)
    assert conditioning.negative is not None and conditioning.negative.shape[:2] == (2, 2)
    table = guidance.embeddings.table
    torch.testing.assert_close(conditioning.negative[0, 0], table["a red cube, side view"])
    torch.testing.assert_close(conditioning.negative[1, 0], table["a red cube, back view"])
    torch.testing.assert_close(conditioning.negative[0, 1], table["a red cube, front view"])
    prediction = guidance.predict_noise(render.image, torch.tensor([300, 300]), conditioning)
    assert prediction.negative is not None and prediction.negative.shape == (2, 2, 4, 8, 8)
    torch.testing.assert_close(prediction.negative_weights, torch.full((2, 2), 0.5))
    # the negatives change the guided noise
    plain = guided_noise(type(prediction)(prediction.cond, prediction.uncond), 10.0)
    assert not torch.allclose(guided_noise(prediction, 10.0), plain)


def test_missing_weights_offline_is_one_clear_sentence(context_factory, tmp_path) -> None:
    config = StableDiffusionConfig(model="someone/not-downloaded-sd")
    with pytest.raises(SdsError) as info:
        StableDiffusionGuidance(config, context_factory("a red cube"))
    message = str(info.value)
    assert "someone/not-downloaded-sd" in message and "hub cannot be reached" in message
    assert "--set guidance.model=" in message and "\n" not in message
    with pytest.raises(SdsError, match="does not exist"):
        DeepFloydIFGuidance(DeepFloydIFConfig(model=str(tmp_path / "nowhere")), context_factory("a red cube"))


@pytest.mark.parametrize(("name", "kind"), [("stable-diffusion", "sd-v"), ("deepfloyd-if", "if")])
def test_start_run_with_a_backend_from_a_folder(tiny_models, tmp_path, name, kind) -> None:
    """`sds generate PROMPT --generator image --guidance NAME --set guidance.model=FOLDER`, shortened."""
    from sds_core.lifecycle import start_run

    trainer = start_run(
        "a red cube",
        tmp_path / "run",
        preset="draft",
        names={"generator": "image", "guidance": name},
        overrides={
            "guidance": {"model": str(tiny_models(kind))},
            "run": {"steps": 3, "preview_every": 3, "checkpoint_every": 0},
        },
        device="cpu",
    )
    before = trainer.generator.param.detach().clone()
    outputs = trainer.run()
    assert not torch.equal(before, trainer.generator.param.detach())
    assert trainer.generator.space == ("latent" if name == "stable-diffusion" else "rgb")
    assert any(p.name == "image.png" for p in outputs)
    assert list((tmp_path / "run" / "previews").glob("*.png"))


@pytest.mark.parametrize(("kind", "added_kv"), [("sd-epsilon", False), ("if", True)])
def test_attention_keeps_each_layer_kind_with_and_without_slicing(tiny_models, context_factory, kind, added_kv) -> None:
    """SD's layers are plain attention, IF's add the text's keys and values: SDPA by default and
    sliced attention both keep each layer's kind, and slicing does not change the prediction."""
    from diffusers.models.attention_processor import (
        Attention,
        AttnAddedKVProcessor2_0,
        AttnProcessor2_0,
        SlicedAttnAddedKVProcessor,
        SlicedAttnProcessor,
    )

    built = {}
    for slicing in (False, True):
        if kind == "if":
            config = DeepFloydIFConfig(model=str(tiny_models(kind)), attention_slicing=slicing)
            built[slicing] = DeepFloydIFGuidance(config, context_factory("a red cube"))
        else:
            built[slicing] = _sd(tiny_models, context_factory, kind, attention_slicing=slicing)
    kinds = {s: {type(p) for p in g.unet.attn_processors.values()} for s, g in built.items()}
    assert kinds[False] == ({AttnAddedKVProcessor2_0} if added_kv else {AttnProcessor2_0})
    assert kinds[True] == ({SlicedAttnAddedKVProcessor} if added_kv else {SlicedAttnProcessor})
    layers = [m for m in built[False].unet.modules() if isinstance(m, Attention)]
    assert layers and all((m.added_kv_proj_dim is not None) == added_kv for m in layers)
    torch.manual_seed(4)
    side = built[False].latent_resolution
    x = torch.randn(2, built[False].channels, side, side)
    render = Render(image=x, space="rgb" if kind == "if" else "latent")
    outputs = [g.predict_noise(x, torch.tensor([100, 800]), g.condition(render, None)) for g in built.values()]
    assert outputs[0].cond.abs().max() > 0
    torch.testing.assert_close(outputs[1].cond, outputs[0].cond, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs[1].uncond, outputs[0].uncond, rtol=1e-4, atol=1e-5)


def test_guidance_resolution_follows_the_model_unless_set(tiny_models, context_factory) -> None:
    assert _sd(tiny_models, context_factory, "sd-v").resolution == SIDE["sd-v"]  # 12 latents x 8
    chosen = _sd(tiny_models, context_factory, resolution=32)
    assert (chosen.resolution, chosen.latent_resolution) == (32, 4)
    with pytest.raises(ConfigError, match="multiple of 8"):
        _sd(tiny_models, context_factory, resolution=36)
    config = DeepFloydIFConfig(model=str(tiny_models("if")), resolution=16)
    assert DeepFloydIFGuidance(config, context_factory("a red cube")).resolution == 16
