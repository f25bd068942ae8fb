"""Timestep schedules, SDS weightings and learning-rate schedules."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

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
