"""Classifier Score Distillation (Yu et al. 2023, "Text-to-3D with Classifier Score Distillation").

g = w(t) s (eps(z_t; y) - eps(z_t)): only the classifier score of classifier-free guidance, without
SDS's eps_hat - eps. Reference: CVMI-Lab/Classifier-Score-Distillation,
threestudio/models/guidance/deep_floyd_simple_guidance.py (grad = w (cond_scale eps_text +
null_scale eps_null ...) with cond_scale 1, null_scale -1, uniform weighting in configs/csd-if.yaml).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sds_core.losses.family_config import CSDConfig
from sds_core.protocols import CameraBatch, Guidance
from tests.losses.frozen.base import ScoreDistillation, add_noise


class CSDLoss(ScoreDistillation):
    name = "csd"
    config: CSDConfig

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
        prediction = guidance.predict_noise(add_noise(x, noise, self.alphas(guidance, x)[t]), t, conditioning)
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
