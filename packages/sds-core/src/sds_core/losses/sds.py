"""Score Distillation Sampling (DreamFusion §3.2).

grad_theta L = E_{t, eps}[ w(t) (eps_hat(z_t; y, t) - eps) dx/dtheta ], without the UNet Jacobian,
implemented as loss = 1/2 || x - sg(x - g) ||^2 with g = w(t)(eps_hat - eps): its gradient on x is
exactly g (divided by the batch size, as the loss is a batch mean).

On a flow-matching prior (x_t = (1 - t) x + t eps, the model predicting v = eps - x) this is
Rectified Flow Distillation Sampling, RFDS (Yang et al., "Text-to-Image Rectified Flow as
Plug-and-Play Priors", ICLR 2025, arXiv:2406.03293; its RFDS gradient, quoted here without its equation number,
which this session could not check): grad_theta L = E_{t, eps}[ w(t) (v_hat(x_t; y, t) - (eps - x))
dx/dtheta ], the velocity residual through the latent, v_hat classifier-free guided as the
pipelines guide it. Both targets are `schedule.target`: eps on DDPM, eps - x on a flow.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sds_core.losses.base import ScoreDistillation
from sds_core.losses.guidance_combination import guided_noise
from sds_core.protocols import CameraBatch, Guidance


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
        """eps_hat(z_t; y, t) - eps, z_t = sqrt(a) x + sqrt(1 - a) eps (DDPM); on a flow RFDS's
        v_hat(x_t; y, t) - (eps - x), x_t = (1 - t) x + t eps."""
        schedule = self.schedule(guidance, x)
        x_t = schedule.add_noise(x, noise, t)
        prediction = guidance.predict_noise(x_t, t, conditioning)
        return guided_noise(prediction, self.guidance_scale(guidance)).float() - schedule.target(x, noise)
