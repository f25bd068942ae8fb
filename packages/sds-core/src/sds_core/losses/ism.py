"""Interval Score Matching (LucidDreamer, Liang et al., CVPR 2024).

g = w(t)(eps_hat(x_t; y, t) - eps_0(x_s, s)) with s = t - delta_t, w(t) = sqrt((1 - a_t) / a_t),
and x_s, x_t reached from x by deterministic DDIM inversion under the unconditional prediction
(about 5 steps of stride 200 up to s, then one step s -> t) instead of adding fresh noise.
Reference: EnVision-Research/LucidDreamer, guidance/sd_utils.py (`add_noise_with_cfg`,
`train_step_perpneg`: target = the inversion's last eps_0(x_s, s)); defaults from
arguments/__init__.py (delta_t 80, xs_delta_t 200, xs_inv_steps 5, xs_eta 0, denoise scale 1,
CFG 7.5). Every prior call goes through `predict_noise`: nothing more is needed of a guidance.
Not reproduced: LucidDreamer's offset noise (0.1 N(0, 1) per channel) and its delta_t annealing.
The inversion is the schedule's deterministic step: DDIM on DDPM, on a flow prior the Euler step
of its ODE (DDIM in the flow's scales alpha = 1 - t, sigma = t); g is taken in eps, a flow's
velocities read through its schedule.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sds_core.losses.base import ScoreDistillation
from sds_core.losses.family_config import ISMConfig
from sds_core.losses.guidance_combination import guided_noise
from sds_core.protocols import CameraBatch, Guidance


class ISMLoss(ScoreDistillation):
    name = "ism"
    config: ISMConfig
    needs_branches = True  # the DDIM inversion runs on the unconditional prediction

    def invert(
        self, x: Tensor, guidance: Guidance, conditioning: Any, t: Tensor, noise: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(x_t, eps_0(x_s, s)): DDIM inversion of x up to s = t - delta_t, then one step to t."""
        cfg = self.config
        schedule = self.schedule(guidance, x)
        s = (t - cfg.delta_t).clamp_min(0)
        current = (s - cfg.xs_delta_t * cfg.xs_inv_steps).clamp_min(0)
        x_cur = schedule.add_noise(x, noise, current)
        for _ in range(cfg.xs_inv_steps):
            if bool((current >= s).all()):
                break
            pred_0 = guidance.predict_noise(x_cur, current, conditioning).uncond.float()
            nxt = torch.minimum(current + cfg.xs_delta_t, s)
            x_cur = schedule.step(x_cur, pred_0, current, nxt)
            current = nxt
        pred_s = guidance.predict_noise(x_cur, s, conditioning).uncond.float()
        return schedule.step(x_cur, pred_s, s, t), schedule.epsilon(pred_s, x_cur, s)

    def direction(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> Tensor:
        x_t, eps_s = self.invert(x, guidance, conditioning, t, noise)
        guided = guided_noise(guidance.predict_noise(x_t, t, conditioning), self.guidance_scale(guidance)).float()
        return self.schedule(guidance, x).epsilon(guided, x_t, t) - eps_s
