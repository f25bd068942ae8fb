"""Timestep schedules, SDS weightings, the priors' noise schedules and learning-rate schedules.

A guidance's noise schedule (`sds_core.protocols.NoiseSchedule`) says how x is noised at an
integer step t and how the guidance's predictions read as the quantities the losses use; the
losses reach it through `schedule_of(guidance, like)`:

- `VPSchedule`: DDPM's variance-preserving x_t = sqrt(a_t) x + sqrt(1 - a_t) eps (a_t = alpha-bar
  of the guidance's `alphas_cumprod()`); the guidance predicts eps (an eps-, v- or x0-model's
  backend converts its output to eps itself, as sds-guidance's do).
- `FlowSchedule`: rectified flow / flow matching, x_t = (1 - s_t) x + s_t eps with s_t the
  scheduler's (time-shifted) sigma at t; the guidance predicts the velocity v = eps - x
  (Liu et al. 2023; Esser et al. 2024, SD3 §2).
Both are the same family x_t = alpha_t x + sigma_t eps, so DDIM's deterministic step (on a flow:
Euler's step of the ODE, what FlowMatchEulerDiscreteScheduler.step does) and the eps / x0 readings
are written once per schedule here, and the losses stay schedule-free.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

if TYPE_CHECKING:
    from sds_core.protocols import NoiseSchedule

Weighting = Literal["sds", "uniform", "ism"]
TSchedule = Literal["uniform", "annealed"]


def timestep_bounds(
    step: int,
    total_steps: int,
    t_range: tuple[float, float],
    schedule: TSchedule,
    t_max_end: float,
    anneal_steps: int,
) -> tuple[float, float]:
    """(t_min, t_max) as fractions of the diffusion length at this step.

    "uniform" keeps DreamFusion's U(0.02, 0.98) (§3.2); "annealed" lowers the maximum linearly
    to `t_max_end` over `anneal_steps` (all steps when 0), as later SDS work does.
    """
    t_min, t_max = t_range
    if schedule == "annealed":
        span = anneal_steps if anneal_steps > 0 else max(total_steps, 1)
        frac = min(max(step, 0) / span, 1.0)
        t_max = t_max + (max(t_max_end, t_min) - t_max) * frac
    return t_min, t_max


def sample_timesteps(
    batch_size: int,
    bounds: tuple[float, float],
    num_train_timesteps: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Integer timesteps drawn uniformly from [t_min * T, t_max * T] (inclusive)."""
    low = round(bounds[0] * num_train_timesteps)
    high = round(bounds[1] * num_train_timesteps)
    high = min(max(high, low), num_train_timesteps - 1)
    t = torch.randint(low, high + 1, (batch_size,), generator=generator)
    return t.to(device)


def sds_weight(alphas_cumprod_t: Tensor, weighting: Weighting) -> Tensor:
    """w(t): "sds" is sigma_t^2 = 1 - alpha-bar_t (DreamFusion §3.2); "uniform" is 1; "ism" is
    sqrt((1 - alpha-bar_t) / alpha-bar_t), LucidDreamer's ISM weight (Liang et al. 2024)."""
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


def ddim_step(x: Tensor, eps: Tensor, alphas_from: Tensor, alphas_to: Tensor) -> Tensor:
    """Deterministic DDIM (eta = 0) from level a_from to a_to, up or down the chain:
    x0 = (x - sqrt(1 - a_from) eps) / sqrt(a_from); x' = sqrt(a_to) x0 + sqrt(1 - a_to) eps."""
    x0 = (x - broadcast((1 - alphas_from).sqrt(), x) * eps) / broadcast(alphas_from.sqrt(), x)
    return add_noise(x0, eps, alphas_to)


class VPSchedule:
    """DDPM's variance-preserving schedule over a guidance's alpha-bar; predictions are eps.

    Its arithmetic is the losses' own before this class existed, expression for expression, so the
    DDPM backends' gradients are unchanged bit for bit (tests/losses/test_bit_exact.py)."""

    kind = "ddpm"
    prediction = "epsilon"

    def __init__(self, alphas_cumprod: Tensor) -> None:
        self.alphas_cumprod = alphas_cumprod
        self.num_train_timesteps = int(alphas_cumprod.shape[0])

    def add_noise(self, x: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return add_noise(x, noise, self.alphas_cumprod[t])

    def target(self, x: Tensor, noise: Tensor) -> Tensor:
        """What an exact prediction at x_t equals: the noise."""
        return noise

    def epsilon(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        return prediction

    def x0(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        a = broadcast(self.alphas_cumprod[t], x_t)
        return (x_t - (1 - a).sqrt() * prediction) / a.sqrt()

    def step(self, x_t: Tensor, prediction: Tensor, t_from: Tensor, t_to: Tensor) -> Tensor:
        return ddim_step(x_t, prediction, self.alphas_cumprod[t_from], self.alphas_cumprod[t_to])

    def weight(self, t: Tensor, weighting: str) -> Tensor:
        return sds_weight(self.alphas_cumprod[t], weighting)  # type: ignore[arg-type]


class FlowSchedule:
    """Flow matching: x_t = (1 - s_t) x + s_t eps, the guidance predicting v = eps - x.

    `sigmas[t]` (t = 0 .. T - 1, increasing noise) are the scheduler's training sigmas with its time
    shift applied (FlowMatchEulerDiscreteScheduler: s = (t + 1) / T, shifted; sds-guidance builds
    the table from the scheduler itself). The weightings read the schedule's scales: "sds" is the
    noise variance s_t^2 (DreamFusion's sigma_t^2), "ism" is s_t / (1 - s_t) (LucidDreamer's
    sigma_t / alpha_t), "uniform" 1."""

    kind = "flow"
    prediction = "velocity"

    def __init__(self, sigmas: Tensor) -> None:
        self.sigmas = sigmas
        self.num_train_timesteps = int(sigmas.shape[0])

    def _sigma(self, t: Tensor, like: Tensor) -> Tensor:
        return broadcast(self.sigmas.to(like.device)[t.to(like.device)], like)

    def add_noise(self, x: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        s = self._sigma(t, x)
        return (1 - s) * x + s * noise

    def target(self, x: Tensor, noise: Tensor) -> Tensor:
        """What an exact prediction at x_t equals: the velocity eps - x."""
        return noise - x

    def epsilon(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """x_t = x + s v and eps = x + v give eps = x_t + (1 - s) v."""
        return x_t + (1 - self._sigma(t, x_t)) * prediction

    def x0(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        return x_t - self._sigma(t, x_t) * prediction

    def step(self, x_t: Tensor, prediction: Tensor, t_from: Tensor, t_to: Tensor) -> Tensor:
        """Euler's step of dx/ds = v from s_from to s_to (DDIM's step in the flow's scales)."""
        return x_t + (self._sigma(t_to, x_t) - self._sigma(t_from, x_t)) * prediction

    def weight(self, t: Tensor, weighting: str) -> Tensor:
        s = self.sigmas.to(t.device)[t]
        if weighting == "sds":
            return s**2
        if weighting == "ism":
            return s / (1 - s)
        if weighting == "uniform":
            return torch.ones_like(s)
        raise ValueError(f"unknown weighting {weighting!r}")


def schedule_of(guidance: Any, like: Tensor) -> NoiseSchedule:
    """The guidance's noise schedule: its own (`noise_schedule()`, `sds_core.protocols.OwnsSchedule`),
    else the VP schedule of its `alphas_cumprod()`, float32 on the device of `like`."""
    from sds_core.errors import ConfigError

    own = getattr(guidance, "noise_schedule", None)
    if callable(own):
        return own()  # type: ignore[no-any-return]
    alphas = getattr(guidance, "alphas_cumprod", None)
    if not callable(alphas):
        raise ConfigError(
            f"the guidance {type(guidance).__name__} has no noise schedule "
            "(neither noise_schedule() nor alphas_cumprod())"
        )
    return VPSchedule(alphas().to(device=like.device, dtype=torch.float32))


def require_schedule(schedule: NoiseSchedule, kinds: tuple[str, ...], loss: str, why: str) -> None:
    """ConfigError (one sentence) when loss `loss` cannot serve a guidance whose schedule is `schedule`."""
    from sds_core.errors import ConfigError

    if schedule.kind not in kinds:
        raise ConfigError(f"the {loss!r} loss cannot serve a {schedule.kind} guidance: {why}; use another --loss")


def learning_rate_factor(
    step: int,
    total_steps: int,
    base_lr: float,
    schedule: str,
    warmup_steps: int,
    lr_init: float,
    lr_final: float,
) -> float:
    """Multiplier of `base_lr` at `step`.

    "warmup_cosine" is DreamFusion A.2: from lr_init up to base_lr over warmup_steps (linear,
    as in the paper's open ports), then cosine decay to lr_final at total_steps.
    """
    if schedule == "constant" or base_lr <= 0:
        return 1.0
    if step < warmup_steps:
        lr = lr_init + (base_lr - lr_init) * step / max(warmup_steps, 1)
    else:
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        progress = min(progress, 1.0)
        lr = lr_final + 0.5 * (base_lr - lr_final) * (1 + math.cos(math.pi * progress))
    return lr / base_lr
