"""Score Distillation Sampling (DreamFusion §3.2).

grad_theta L = E_{t, eps}[ w(t) (eps_hat(z_t; y, t) - eps) dx/dtheta ], without the UNet Jacobian,
implemented as loss = 1/2 || x - sg(x - g) ||^2 with g = w(t)(eps_hat - eps): its gradient on x is
exactly g (divided by the batch size, as the loss is a batch mean).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sds_core.protocols import CameraBatch, Guidance
from tests.losses.frozen.base import ScoreDistillation, add_noise
from tests.losses.frozen.guidance_combination import guided_noise


class SDSLoss(ScoreDistillation):
    """The SDS loss for any guidance backend, in its own space (pixels or latents)."""

    name = "sds"

    def direction(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> Tensor:
        """eps_hat(z_t; y, t) - eps, z_t = sqrt(a) x + sqrt(1 - a) eps."""
        x_t = add_noise(x, noise, self.alphas(guidance, x)[t])
        prediction = guidance.predict_noise(x_t, t, conditioning)
        return guided_noise(prediction, self.guidance_scale(guidance)).float() - noise
