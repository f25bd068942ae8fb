"""FROZEN: sds_core/losses/base.py as it was at commit 2d68d16, before the noise-schedule abstraction
(tests/losses/test_bit_exact.py compares today's losses with this copy; never edit it).

What every loss of the SDS family shares (DreamFusion §3.2 and its descendants).

Each step: draw t and eps, ask the frozen prior for noise predictions without tracking gradients,
turn them into a per-pixel update direction g, and return loss = 1/2 || x - sg(x - g) ||^2, whose
gradient on x is exactly g (divided by the batch size: the loss is a batch mean). A loss of the
family only says how g is made (`direction`) and how it is weighted over t (`weight`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sds_core.losses.sds_config import SDSConfig
from sds_core.protocols import BuildContext, CameraBatch, Guidance, LossOutput
from sds_core.schedules import sample_timesteps, timestep_bounds


def sds_weight(alphas_cumprod_t: Tensor, weighting: str) -> Tensor:
    """sds_core.schedules.sds_weight as it was at 2d68d16 (frozen with the losses)."""
    if weighting == "sds":
        return 1.0 - alphas_cumprod_t
    if weighting == "ism":
        return ((1.0 - alphas_cumprod_t) / alphas_cumprod_t).sqrt()
    if weighting == "uniform":
        return torch.ones_like(alphas_cumprod_t)
    raise ValueError(f"unknown weighting {weighting!r}")


def broadcast(values: Tensor, like: Tensor) -> Tensor:
    """(B,) values shaped to broadcast over a (B, ...) tensor."""
    return values.view((-1,) + (1,) * (like.dim() - 1))


def add_noise(x: Tensor, noise: Tensor, alphas_t: Tensor) -> Tensor:
    """x_t = sqrt(alpha-bar_t) x + sqrt(1 - alpha-bar_t) eps (the VP forward process)."""
    return broadcast(alphas_t.sqrt(), x) * x + broadcast((1 - alphas_t).sqrt(), x) * noise


class ScoreDistillation:
    """The shared machinery; subclasses implement `direction` (and may change `weight`)."""

    #: the name of the loss term in metrics.jsonl (`<name>` and `<name>_grad_norm`)
    name = "sds"

    def __init__(self, config: SDSConfig, context: BuildContext) -> None:
        self.config = config
        self.total_steps = context.total_steps

    def guidance_scale(self, guidance: Guidance) -> float:
        scale = self.config.guidance_scale
        return float(guidance.default_guidance_scale if scale is None else scale)

    def alphas(self, guidance: Guidance, like: Tensor) -> Tensor:
        """alpha-bar_t of the guidance's schedule, float32 on the device of `like`."""
        return guidance.alphas_cumprod().to(device=like.device, dtype=torch.float32)

    def sample_t(self, batch_size: int, guidance: Guidance, step: int, device: torch.device) -> Tensor:
        cfg = self.config
        bounds = timestep_bounds(step, self.total_steps, cfg.t_range, cfg.t_schedule, cfg.t_max_end, cfg.anneal_steps)
        return sample_timesteps(batch_size, bounds, guidance.num_train_timesteps, device)

    def weight(self, alphas_t: Tensor) -> Tensor:
        """w(t) per sample."""
        return sds_weight(alphas_t, self.config.weighting)

    def direction(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> Tensor:
        """The unweighted update direction for x (float32, detached), e.g. eps_hat - eps for SDS."""
        raise NotImplementedError

    def gradient(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> Tensor:
        """g = w(t) * direction for given t and eps, computed without tracking gradients."""
        with torch.no_grad():
            alphas_t = self.alphas(guidance, x)[t]
            direction = self.direction(x.detach().float(), guidance, conditioning, t, noise, cameras)
            grad = broadcast(self.weight(alphas_t), x) * direction
            grad = torch.nan_to_num(grad)
            if self.config.grad_clip is not None:
                grad = grad.clamp(-self.config.grad_clip, self.config.grad_clip)
        return grad

    def compute(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> LossOutput:
        grad = self.gradient(x, guidance, conditioning, t, noise, cameras)
        target = (x.float() - grad).detach()
        loss = 0.5 * (x.float() - target).pow(2).sum() / x.shape[0]
        terms = {self.name: float(loss.detach()), f"{self.name}_grad_norm": float(grad.norm() / x.shape[0])}
        t_frac = float(t.float().mean()) / guidance.num_train_timesteps
        return LossOutput(loss=loss, terms=terms, t=t_frac)

    def __call__(
        self, x: Tensor, guidance: Guidance, conditioning: Any, step: int, cameras: CameraBatch | None = None
    ) -> LossOutput:
        t = self.sample_t(x.shape[0], guidance, step, x.device)
        noise = torch.randn(x.shape, dtype=torch.float32).to(x.device)
        return self.compute(x, guidance, conditioning, t, noise, cameras)


def ddim_step(x: Tensor, eps: Tensor, alphas_from: Tensor, alphas_to: Tensor) -> Tensor:
    """Deterministic DDIM (eta = 0) from level a_from to a_to, up or down the chain:
    x0 = (x - sqrt(1 - a_from) eps) / sqrt(a_from); x' = sqrt(a_to) x0 + sqrt(1 - a_to) eps."""
    x0 = (x - broadcast((1 - alphas_from).sqrt(), x) * eps) / broadcast(alphas_from.sqrt(), x)
    return add_noise(x0, eps, alphas_to)
