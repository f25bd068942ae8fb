"""Interval Score Matching (LucidDreamer, Liang et al., CVPR 2024).

g = w(t)(eps_hat(x_t; y, t) - eps_0(x_s, s)) with s = t - delta_t, w(t) = sqrt((1 - a_t) / a_t),
and x_s, x_t reached from x by deterministic DDIM inversion under the unconditional prediction
(about 5 steps of stride 200 up to s, then one step s -> t) instead of adding fresh noise.
Reference: EnVision-Research/LucidDreamer, guidance/sd_utils.py (`add_noise_with_cfg`,
`train_step_perpneg`: target = the inversion's last eps_0(x_s, s)); defaults from
arguments/__init__.py (delta_t 80, xs_delta_t 200, xs_inv_steps 5, xs_eta 0, denoise scale 1,
CFG 7.5). Every prior call goes through `predict_noise`: nothing more is needed of a guidance.
Not reproduced: LucidDreamer's offset noise (0.1 N(0, 1) per channel) and its delta_t annealing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sds_core.losses.family_config import ISMConfig
from sds_core.protocols import CameraBatch, Guidance
from tests.losses.frozen.base import ScoreDistillation, add_noise, ddim_step
from tests.losses.frozen.guidance_combination import guided_noise


class ISMLoss(ScoreDistillation):
    name = "ism"
    config: ISMConfig

    def invert(
        self, x: Tensor, guidance: Guidance, conditioning: Any, t: Tensor, noise: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(x_t, eps_0(x_s, s)): DDIM inversion of x up to s = t - delta_t, then one step to t."""
        cfg = self.config
        alphas = self.alphas(guidance, x)
        s = (t - cfg.delta_t).clamp_min(0)
        current = (s - cfg.xs_delta_t * cfg.xs_inv_steps).clamp_min(0)
        x_cur = add_noise(x, noise, alphas[current])
        for _ in range(cfg.xs_inv_steps):
            if bool((current >= s).all()):
                break
            eps_0 = guidance.predict_noise(x_cur, current, conditioning).uncond.float()
            nxt = torch.minimum(current + cfg.xs_delta_t, s)
            x_cur = ddim_step(x_cur, eps_0, alphas[current], alphas[nxt])
            current = nxt
        eps_s = guidance.predict_noise(x_cur, s, conditioning).uncond.float()
        return ddim_step(x_cur, eps_s, alphas[s], alphas[t]), eps_s

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
        eps_hat = guided_noise(guidance.predict_noise(x_t, t, conditioning), self.guidance_scale(guidance)).float()
        return eps_hat - eps_s
