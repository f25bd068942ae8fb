"""The hybrid objective of learned variance (Nichol & Dhariwal 2021, "Improved DDPM", §3.1).

L = L_simple + lambda * L_vlb: the noise MSE trains epsilon; the variational bound trains only
the variance interpolation v (the mean it uses is built from a detached epsilon), with
Sigma = exp(f log beta_t + (1 - f) log beta~_t), f = (v + 1) / 2, as diffusers' `learned_range`
reads IF's output. Written here because diffusers ships samplers for learned variance but no
training objective for it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def _discretized_gaussian_nll(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """-log p(x) of 8-bit images in [-1, 1] under a Gaussian integrated over each bin (DDPM's L_0)."""
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centred + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centred - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    log_probs = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, delta))
    return -log_probs


class HybridLoss:
    """L_simple + weight * L_vlb for a UNet whose output is [epsilon, v] along channels."""

    def __init__(self, alphas_cumprod: Tensor, vlb_weight: float) -> None:
        ab = alphas_cumprod.double()
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        betas = 1 - ab / ab_prev
        posterior_var = betas * (1 - ab_prev) / (1 - ab)
        self.steps = ab.shape[0]
        self.weight = vlb_weight
        self.ab = ab.float()
        # log beta~ clipped at t = 0 (where it is 0) to its value at t = 1, as Improved DDPM
        self.log_post = torch.log(torch.cat([posterior_var[1:2], posterior_var[1:]])).float()
        self.log_beta = torch.log(betas).float()
        self.coef_x0 = (betas * ab_prev.sqrt() / (1 - ab)).float()
        self.coef_xt = ((1 - ab_prev) * (1 - betas).sqrt() / (1 - ab)).float()

    def __call__(self, output: Tensor, x0: Tensor, x_t: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(mse, vlb): the noise MSE and the per-timestep bound in bits per dimension, both means."""
        channels = x0.shape[1]
        eps, v = output[:, :channels], output[:, channels:]
        mse = (eps - noise).pow(2).mean()

        def at(table: Tensor) -> Tensor:
            return table.to(x0.device)[t].view(-1, 1, 1, 1)

        frac = (v + 1) / 2
        log_var = frac * at(self.log_beta) + (1 - frac) * at(self.log_post)
        ab = at(self.ab)
        x0_pred = (x_t - (1 - ab).sqrt() * eps.detach()) / ab.sqrt()
        mean_pred = at(self.coef_x0) * x0_pred + at(self.coef_xt) * x_t
        mean_true = at(self.coef_x0) * x0 + at(self.coef_xt) * x_t
        kl = _normal_kl(mean_true, at(self.log_post), mean_pred, log_var).mean(dim=(1, 2, 3))
        nll = _discretized_gaussian_nll(x0, mean_pred, 0.5 * log_var).mean(dim=(1, 2, 3))
        vlb = torch.where(t == 0, nll, kl) / math.log(2.0)
        # the bound sums over all T steps; this one-step sample stands for T of them (Improved DDPM)
        return mse, self.weight * self.steps * vlb.mean()
