"""Noise-Free Score Distillation (Katzir, Patashnik, Cohen-Or, Lischinski, ICLR 2024).

g = w(t)(delta_D + s delta_C) with delta_C = eps(z_t; y) - eps(z_t; 0) (the condition direction)
and delta_D = eps(z_t; 0) for t < 200, eps(z_t; 0) - eps(z_t; y_neg) above (the domain direction,
pushing away from the negative prompt's images), s = 7.5 (arXiv:2310.17590). The noise term eps of SDS
is never subtracted: delta_D stands for it. Needs a guidance that predicts under a free negative
text (`sds_core.protocols.NegativePrompting`). The paper's formula is in eps: a flow prior's
velocities are read as eps through its schedule (eps = x_t + (1 - t) v), and t_switch is a step
of the prior's own timesteps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sds_core.losses.base import ScoreDistillation, broadcast
from sds_core.losses.family_config import NFSDConfig
from sds_core.protocols import BuildContext, CameraBatch, Guidance, NegativePrompting, require


class NFSDLoss(ScoreDistillation):
    name = "nfsd"
    config: NFSDConfig
    needs_branches = True  # delta_C = eps_y - eps_0, delta_D from eps_0

    def __init__(self, config: NFSDConfig, context: BuildContext) -> None:
        super().__init__(config, context)
        if context.guidance is not None:
            require(context.guidance, NegativePrompting, "nfsd", "predictions under a negative prompt")
            context.guidance.negative_condition(None, config.negative_prompt)  # type: ignore[attr-defined]

    def direction(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> Tensor:
        require(guidance, NegativePrompting, "nfsd", "predictions under a negative prompt")
        schedule = self.schedule(guidance, x)
        x_t = schedule.add_noise(x, noise, t)
        prediction = guidance.predict_noise(x_t, t, conditioning)
        eps_y = schedule.epsilon(prediction.cond.float(), x_t, t)
        eps_0 = schedule.epsilon(prediction.uncond.float(), x_t, t)
        delta_d = eps_0
        late = t >= self.config.t_switch
        if bool(late.any()):
            negative = guidance.negative_condition(conditioning, self.config.negative_prompt)  # type: ignore[attr-defined]
            eps_neg = schedule.epsilon(guidance.predict_noise(x_t, t, negative).cond.float(), x_t, t)
            delta_d = torch.where(broadcast(late, x), eps_0 - eps_neg, eps_0)
        return delta_d + self.guidance_scale(guidance) * (eps_y - eps_0)
