"""Score Distillation Sampling (DreamFusion §3.2).

grad_theta L = E_{t, eps}[ w(t) (eps_hat(z_t; y, t) - eps) dx/dtheta ], without the UNet Jacobian,
implemented as loss = 1/2 || x - sg(x - g) ||^2 with g = w(t)(eps_hat - eps): its gradient on x is
exactly g (divided by the batch size, as the loss is a batch mean).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sds_core.losses.guidance_combination import guided_noise
from sds_core.losses.sds_config import SDSConfig
from sds_core.protocols import BuildContext, Guidance, LossOutput
from sds_core.schedules import sample_timesteps, sds_weight, timestep_bounds


class SDSLoss:
    """The SDS loss for any guidance backend, in its own space (pixels or latents)."""

    def __init__(self, config: SDSConfig, context: BuildContext) -> None:
        self.config = config
        self.total_steps = context.total_steps

    def guidance_scale(self, guidance: Guidance) -> float:
        scale = self.config.guidance_scale
        return float(guidance.default_guidance_scale if scale is None else scale)

    def sample_t(self, batch_size: int, guidance: Guidance, step: int, device: torch.device) -> Tensor:
        cfg = self.config
        bounds = timestep_bounds(step, self.total_steps, cfg.t_range, cfg.t_schedule, cfg.t_max_end, cfg.anneal_steps)
        return sample_timesteps(batch_size, bounds, guidance.num_train_timesteps, device)

    def gradient(self, x: Tensor, guidance: Guidance, conditioning: Any, t: Tensor, noise: Tensor) -> Tensor:
        """g = w(t)(eps_hat - eps) for given t and eps, computed without tracking gradients."""
        alphas = guidance.alphas_cumprod().to(device=x.device, dtype=torch.float32)[t]
        shape = (-1,) + (1,) * (x.dim() - 1)
        with torch.no_grad():
            x_t = alphas.sqrt().view(shape) * x.detach().float() + (1 - alphas).sqrt().view(shape) * noise
            prediction = guidance.predict_noise(x_t, t, conditioning)
            eps_hat = guided_noise(prediction, self.guidance_scale(guidance)).float()
            grad = sds_weight(alphas, self.config.weighting).view(shape) * (eps_hat - noise)
            grad = torch.nan_to_num(grad)
            if self.config.grad_clip is not None:
                grad = grad.clamp(-self.config.grad_clip, self.config.grad_clip)
        return grad

    def compute(self, x: Tensor, guidance: Guidance, conditioning: Any, t: Tensor, noise: Tensor) -> LossOutput:
        grad = self.gradient(x, guidance, conditioning, t, noise)
        target = (x.float() - grad).detach()
        loss = 0.5 * (x.float() - target).pow(2).sum() / x.shape[0]
        terms = {"sds": float(loss.detach()), "sds_grad_norm": float(grad.norm() / x.shape[0])}
        t_frac = float(t.float().mean()) / guidance.num_train_timesteps
        return LossOutput(loss=loss, terms=terms, t=t_frac)

    def __call__(self, x: Tensor, guidance: Guidance, conditioning: Any, step: int) -> LossOutput:
        t = self.sample_t(x.shape[0], guidance, step, x.device)
        noise = torch.randn(x.shape, dtype=torch.float32).to(x.device)
        return self.compute(x, guidance, conditioning, t, noise)
