"""Options of the SDS loss (no torch: read by `sds plugins`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class SDSConfig:
    """Score Distillation Sampling, DreamFusion §3.2."""

    # omega in eps_hat = (1 + omega) eps(z; y) - omega eps(z) (§3.2, omega = 100 for Imagen);
    # None takes the guidance backend's default (the exact `shapes` prior wants a low one).
    guidance_scale: float | None = None
    # §3.2: w(t) = sigma_t^2; "uniform": 1; "ism": sqrt((1 - alpha-bar_t) / alpha-bar_t) (LucidDreamer)
    weighting: Literal["sds", "uniform", "ism"] = "sds"
    t_range: tuple[float, float] = (0.02, 0.98)  # §3.2: t ~ U(0.02, 0.98)
    # "uniform": t ~ U(t_range) throughout (§3.2); "annealed" (deviation, later SDS work): the
    # maximum t falls linearly to t_max_end over anneal_steps
    t_schedule: Literal["uniform", "annealed"] = "uniform"
    t_max_end: float = 0.5  # "annealed": the maximum t reached at the end of annealing
    anneal_steps: int = 0  # "annealed": steps to reach t_max_end (0: the whole run)
    grad_clip: float | None = None  # clamp each element of w(t)(eps_hat - eps) to [-c, c]
