"""The SDS loss: its gradient, classifier-free guidance, weightings and timestep schedules."""

from __future__ import annotations

import pytest
import torch

from sds_core.losses.guidance_combination import guided_noise, perpendicular
from sds_core.losses.sds import SDSLoss
from sds_core.losses.sds_config import SDSConfig
from sds_core.protocols import BuildContext, NoisePrediction
from sds_core.schedules import learning_rate_factor, sample_timesteps, sds_weight, timestep_bounds
from tests.conftest import TargetConfig, TargetGuidance


def make_loss(**kwargs: object) -> SDSLoss:
    return SDSLoss(SDSConfig(**kwargs), BuildContext(device=torch.device("cpu"), prompt="p", total_steps=100))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("weighting", ["sds", "uniform"])
def test_sds_gradient_equals_weighted_guided_noise_residual(batch: int, weighting: str) -> None:
    guidance = TargetGuidance(TargetConfig(side=8))
    omega = 7.5
    loss_fn = make_loss(guidance_scale=omega, weighting=weighting)
    torch.manual_seed(0)
    x = (torch.rand(batch, 3, 8, 8) * 2 - 1).requires_grad_(True)
    t = torch.randint(20, 980, (batch,))
    noise = torch.randn(batch, 3, 8, 8)
    out = loss_fn.compute(x, guidance, None, t, noise)
    out.loss.backward()

    # By hand: z_t = sqrt(a) x + sqrt(1 - a) eps; eps_hat = (1 + w) eps_c - w eps_u; g = w(t)(eps_hat - eps)
    a = guidance.alphas_cumprod()[t].view(-1, 1, 1, 1)
    z_t = a.sqrt() * x.detach() + (1 - a).sqrt() * noise
    eps_c = (z_t - a.sqrt() * guidance.cond_target) / (1 - a).sqrt()
    eps_u = (z_t - a.sqrt() * guidance.uncond_target) / (1 - a).sqrt()
    eps_hat = (1 + omega) * eps_c - omega * eps_u
    w = (1 - a) if weighting == "sds" else torch.ones_like(a)
    expected = w * (eps_hat - noise) / batch  # the loss is a batch mean
    torch.testing.assert_close(x.grad, expected, rtol=1e-4, atol=1e-5)
    # the loss value is 1/2 ||g||^2 per sample
    torch.testing.assert_close(out.loss.detach(), 0.5 * (expected * batch).pow(2).sum() / batch, rtol=1e-4, atol=1e-6)


def test_sds_gradient_does_not_flow_through_the_denoiser() -> None:
    guidance = TargetGuidance(TargetConfig(side=4))
    loss_fn = make_loss(guidance_scale=1.0)
    x = torch.zeros(1, 3, 4, 4, requires_grad=True)
    loss_fn(x, guidance, None, step=0).loss.backward()
    x_t, _ = guidance.calls[-1]
    assert not x_t.requires_grad


def test_cfg_formula_matches_paper() -> None:
    cond, uncond = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    omega = 100.0
    got = guided_noise(NoisePrediction(cond=cond, uncond=uncond), omega)
    torch.testing.assert_close(got, (1 + omega) * cond - omega * uncond)
    torch.testing.assert_close(guided_noise(NoisePrediction(cond=cond, uncond=uncond), 0.0), cond)


def test_perp_neg_removes_only_the_perpendicular_part() -> None:
    torch.manual_seed(0)
    cond, uncond, neg = torch.randn(3, 2, 1, 4, 4).unbind(0)
    pos = cond - uncond
    perp = perpendicular(neg - uncond, pos)
    assert torch.allclose((perp.flatten(1) * pos.flatten(1)).sum(1), torch.zeros(2), atol=1e-5)
    weights = torch.tensor([[0.5, 2.0]])
    got = guided_noise(NoisePrediction(cond, uncond, negative=neg[None], negative_weights=weights), 3.0)
    expected = uncond + 4.0 * (pos - weights[0].view(-1, 1, 1, 1) * perp)
    torch.testing.assert_close(got, expected)


def test_gradient_clipping_bounds_each_element() -> None:
    guidance = TargetGuidance(TargetConfig(side=4))
    x = torch.zeros(1, 3, 4, 4)
    t = torch.tensor([500])
    g = make_loss(guidance_scale=50.0, grad_clip=0.01).gradient(x, guidance, None, t, torch.randn_like(x))
    assert g.abs().max() <= 0.01 + 1e-7


def test_sds_weight_is_sigma_squared() -> None:
    a = torch.tensor([0.9, 0.5, 0.1])
    torch.testing.assert_close(sds_weight(a, "sds"), 1 - a)
    torch.testing.assert_close(sds_weight(a, "uniform"), torch.ones(3))


def test_timesteps_stay_in_range_and_annealed_maximum_decreases() -> None:
    t = sample_timesteps(10000, (0.02, 0.98), 1000, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 20 and t.max() <= 980
    assert t.min() <= 25 and t.max() >= 975  # the whole range is reached
    start = timestep_bounds(0, 1000, (0.02, 0.98), "annealed", 0.5, 0)
    mid = timestep_bounds(500, 1000, (0.02, 0.98), "annealed", 0.5, 0)
    end = timestep_bounds(1000, 1000, (0.02, 0.98), "annealed", 0.5, 0)
    assert start == (0.02, 0.98) and end == pytest.approx((0.02, 0.5))
    assert mid[1] == pytest.approx(0.74)
    assert timestep_bounds(900, 1000, (0.02, 0.98), "uniform", 0.5, 0) == (0.02, 0.98)


def test_paper_learning_rate_schedule() -> None:
    def lr(step: int) -> float:
        return 1e-4 * learning_rate_factor(step, 15000, 1e-4, "warmup_cosine", 3000, 1e-9, 1e-6)

    assert lr(0) == pytest.approx(1e-9)
    assert lr(1500) == pytest.approx((1e-9 + 1e-4) / 2)
    assert lr(3000) == pytest.approx(1e-4)
    assert lr(15000) == pytest.approx(1e-6)
    assert lr(9000) == pytest.approx(1e-6 + 0.5 * (1e-4 - 1e-6))
    assert learning_rate_factor(10, 100, 0.1, "constant", 3000, 1e-9, 1e-6) == 1.0
