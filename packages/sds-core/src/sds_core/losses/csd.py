"""Classifier Score Distillation (Yu et al. 2023, "Text-to-3D with Classifier Score Distillation").

g = w(t) s (eps(z_t; y) - eps(z_t)): only the classifier score of classifier-free guidance, without
SDS's eps_hat - eps. Reference: CVMI-Lab/Classifier-Score-Distillation,
threestudio/models/guidance/deep_floyd_simple_guidance.py (grad = w (cond_scale eps_text +
null_scale eps_null ...) with cond_scale 1, null_scale -1, uniform weighting in configs/csd-if.yaml).
On a flow prior the classifier score is taken in the model's own quantity, s (v_y - v_0) (for a
fixed x_t, eps_y - eps_0 = (1 - t)(v_y - v_0): the same direction).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sds_core.losses.base import ScoreDistillation
from sds_core.losses.family_config import CSDConfig
from sds_core.protocols import CameraBatch, Guidance


class CSDLoss(ScoreDistillation):
    name = "csd"
    config: CSDConfig
    needs_branches = True  # the classifier score eps_y - eps_0

    def direction(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> Tensor:
        """s (eps_y - eps_0) at z_t = sqrt(a) x + sqrt(1 - a) eps."""
        x_t = self.schedule(guidance, x).add_noise(x, noise, t)
        prediction = guidance.predict_noise(x_t, t, conditioning)
        return self.guidance_scale(guidance) * (prediction.cond - prediction.uncond).float()

    def gradient(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> Tensor:
        grad = super().gradient(x, guidance, conditioning, t, noise, cameras)
        if self.config.normalize:  # the reference normalises g over the whole batch
            grad = grad / (grad.norm() + 1e-8)
        return grad
