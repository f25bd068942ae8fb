"""Each loss's gradient on x equals its formula, recomputed by hand from the same prior calls.

On the exact `shapes` prior (RGB in [-1, 1]) and on a tiny Stable Diffusion (latents); the losses
are built as the loop builds them (with the guidance in the BuildContext).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from sds_core.losses.csd import CSDLoss
from sds_core.losses.family_config import CSDConfig, ISMConfig, NFSDConfig, SJCConfig, VSDConfig
from sds_core.losses.ism import ISMLoss
from sds_core.losses.nfsd import NFSDLoss
from sds_core.losses.sjc import SJCLoss
from sds_core.losses.vsd import VSDLoss
from sds_core.protocols import CameraBatch, Render

from .conftest import context

OMEGA = 3.0
T = torch.tensor([120, 700])  # one sample below NFSD's switch at 200, one above


def alpha(guidance: Any, t: Tensor) -> Tensor:
    return guidance.alphas_cumprod()[t].view(-1, 1, 1, 1)


def cfg(prediction: Any) -> Tensor:
    return prediction.uncond + (1 + OMEGA) * (prediction.cond - prediction.uncond)


def sample(kind: str, guidance: Any) -> tuple[Tensor, Any]:
    """x in model space (batch 2) and its conditioning."""
    torch.manual_seed(3)
    if kind == "shapes":
        image = torch.rand(2, 3, 16, 16)
        render = Render(image=image, shading=["albedo", "albedo"])
        return guidance.prepare(render), guidance.condition(render, None)
    latents = torch.randn(2, 4, 8, 8)
    render = Render(image=latents, space="latent")
    return guidance.prepare(render), guidance.condition(render, None)


def by_hand(
    name: str, loss: Any, guidance: Any, x: Tensor, cond: Any, t: Tensor, noise: Tensor, cams: CameraBatch
) -> Tensor:
    """The expected gradient on x (a batch mean: divided by the batch size)."""
    a = alpha(guidance, t)
    predict = guidance.predict_noise
    if name == "csd":  # uniform w, scale 1: eps_y - eps_0
        p = predict(a.sqrt() * x + (1 - a).sqrt() * noise, t, cond)
        g = p.cond - p.uncond
    elif name == "nfsd":  # (1 - a)(delta_D + s delta_C), s = OMEGA here
        x_t = a.sqrt() * x + (1 - a).sqrt() * noise
        p = predict(x_t, t, cond)
        neg = predict(x_t, t, guidance.negative_condition(cond, loss.config.negative_prompt)).cond
        delta_d = torch.stack([p.uncond[i] if t[i] < 200 else p.uncond[i] - neg[i] for i in range(len(t))])
        g = (1 - a) * (delta_d + OMEGA * (p.cond - p.uncond))
    elif name == "sjc":  # -(D(z) - x) / sigma, z = x + sigma eps, model input z / sqrt(1 + sigma^2)
        sigma = ((1 - a) / a).sqrt()
        z = x + sigma * noise
        denoised = z - sigma * cfg(predict(z / (1 + sigma**2).sqrt(), t, cond))
        g = -(denoised - x) / sigma
    elif name == "ism":  # per sample: DDIM inversion 0 -> s by 200, s -> t, then w (eps_hat - eps_0(x_s, s))
        rows = []
        for i in range(len(t)):
            bar = guidance.alphas_cumprod()
            xi, ei, ci = x[i : i + 1], noise[i : i + 1], _row(cond, i)
            s = int(t[i]) - 80
            cur = max(s - 1000, 0)
            h = bar[cur].sqrt() * xi + (1 - bar[cur]).sqrt() * ei
            while cur < s:
                nxt = min(cur + 200, s)
                e = predict(h, torch.tensor([cur]), ci).uncond
                h = bar[nxt].sqrt() * (h - (1 - bar[cur]).sqrt() * e) / bar[cur].sqrt() + (1 - bar[nxt]).sqrt() * e
                cur = nxt
            e_s = predict(h, torch.tensor([s]), ci).uncond
            ti = int(t[i])
            x_t = bar[ti].sqrt() * (h - (1 - bar[s]).sqrt() * e_s) / bar[s].sqrt() + (1 - bar[ti]).sqrt() * e_s
            eps_hat = cfg(predict(x_t, t[i : i + 1], ci))
            rows.append(((1 - bar[ti]) / bar[ti]).sqrt() * (eps_hat - e_s))
        g = torch.cat(rows)
    elif name == "vsd":  # (1 - a)(eps_hat - eps_phi(x_t; y, t, c))
        x_t = a.sqrt() * x + (1 - a).sqrt() * noise
        p = predict(x_t, t, cond)
        camera = cams.c2w.reshape(len(t), -1)
        phi = loss.phi(x_t, t, cond, camera) if loss.kind == "lora" else p.cond + loss.phi(x_t, t, camera)
        g = (1 - a) * (cfg(p) - phi)
    else:
        raise AssertionError(name)
    return g / x.shape[0]


def _row(cond: Any, i: int) -> Any:
    """The conditioning of sample i alone (shapes: masks per sample; SD: embeddings per sample)."""
    from dataclasses import fields, replace

    values = {}
    for f in fields(cond):
        value = getattr(cond, f.name)
        if isinstance(value, list | Tensor) and value is not None:
            values[f.name] = value[i : i + 1]
    return replace(cond, **values)


def build(name: str, guidance: Any) -> Any:
    ctx = context(guidance=guidance)
    if name == "csd":
        return CSDLoss(CSDConfig(), ctx)
    if name == "nfsd":
        return NFSDLoss(NFSDConfig(guidance_scale=OMEGA), ctx)
    if name == "sjc":
        return SJCLoss(SJCConfig(guidance_scale=OMEGA), ctx)
    if name == "ism":
        return ISMLoss(ISMConfig(guidance_scale=OMEGA), ctx)
    loss = VSDLoss(VSDConfig(guidance_scale=OMEGA), ctx)
    with torch.no_grad():  # move eps_phi away from its zero start, so that it shows in g
        for p in loss.phi.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return loss


def _cameras(batch: int) -> CameraBatch:
    from sds_core.cameras import CameraSampler
    from sds_core.config import CameraConfig

    return CameraSampler(CameraConfig()).orbit(batch, elevation=20.0)


LOSSES = ["csd", "nfsd", "sjc", "ism", "vsd"]


def check(name: str, guidance: Any, kind: str) -> None:
    loss = build(name, guidance)
    x, cond = sample(kind, guidance)
    x = x.detach().requires_grad_(True)
    noise = torch.randn_like(x)
    cams = _cameras(x.shape[0])  # the loop hands them to every loss; VSD's eps_phi reads them
    out = loss.compute(x, guidance, cond, T, noise, cams)
    out.loss.backward()
    with torch.no_grad():
        expected = by_hand(name, loss, guidance, x.detach(), cond, T, noise, cams)
    assert expected.abs().max() > 1e-4
    torch.testing.assert_close(x.grad, expected, rtol=1e-3, atol=1e-5)
    assert out.terms[name] >= 0 and out.t == pytest.approx(float(T.float().mean()) / 1000)


@pytest.mark.parametrize("name", LOSSES)
def test_gradient_on_the_exact_shapes_prior(name: str, shapes_guidance: Any) -> None:
    check(name, shapes_guidance, "shapes")


@pytest.mark.parametrize("name", LOSSES)
def test_gradient_on_tiny_stable_diffusion(name: str, make_sd: Any) -> None:
    guidance = make_sd()
    check(name, guidance, "sd")
    if name == "vsd":
        assert VSDLoss(VSDConfig(), context(guidance=guidance)).kind == "lora"  # "auto" picks the LoRA copy


def test_csd_normalize_gives_a_unit_gradient_over_the_batch(shapes_guidance: Any) -> None:
    loss = CSDLoss(CSDConfig(normalize=True), context(guidance=shapes_guidance))
    x, cond = sample("shapes", shapes_guidance)
    grad = loss.gradient(x, shapes_guidance, cond, T, torch.randn_like(x))
    assert float(grad.norm()) == pytest.approx(1.0, abs=1e-5)
