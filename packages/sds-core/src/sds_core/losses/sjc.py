"""Score Jacobian Chaining (Wang et al., CVPR 2023), as threestudio's `compute_grad_sjc`.

SJC perturbs x in the variance-exploding parametrisation: z = x + sigma eps with
sigma = sqrt((1 - a) / a), feeds the VP model z / sqrt(1 + sigma^2) (the same point as
sqrt(a) x + sqrt(1 - a) eps), denoises D(z) = z - sigma eps_hat and ascends the score
-(D(z) - x) / sigma (with variance reduction, `var_red`) or -(D(z) - z) / sigma. Reference:
threestudio-project/threestudio, threestudio/models/guidance/stable_diffusion_guidance.py,
`compute_grad_sjc` (us = sqrt((1 - alphas) / alphas), scaled_zs, Ds, var_red).
Its variance-exploding reparametrisation is derived for DDPM's VP schedule: a flow prior is refused.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sds_core.losses.base import ScoreDistillation, broadcast
from sds_core.losses.family_config import SJCConfig
from sds_core.losses.guidance_combination import guided_noise
from sds_core.protocols import CameraBatch, Guidance
from sds_core.schedules import require_schedule


class SJCLoss(ScoreDistillation):
    name = "sjc"
    config: SJCConfig
    kinds = ("ddpm",)
    refusal = (
        "its variance-exploding denoiser z = x + sigma eps, fed as z / sqrt(1 + sigma^2), "
        "is derived for DDPM's variance-preserving schedule"
    )

    def direction(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> Tensor:
        schedule = self.schedule(guidance, x)
        require_schedule(schedule, self.kinds, self.name, self.refusal)
        alphas_t = schedule.alphas_cumprod[t]  # type: ignore[attr-defined]
        sigma = broadcast(((1 - alphas_t) / alphas_t).sqrt(), x)
        z = x + sigma * noise
        prediction = guidance.predict_noise(z / (1 + sigma**2).sqrt(), t, conditioning)
        denoised = z - sigma * guided_noise(prediction, self.guidance_scale(guidance)).float()
        return -(denoised - (x if self.config.var_red else z)) / sigma
