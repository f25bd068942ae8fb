"""Classifier-free guidance (DreamFusion §3.2) and Perp-Neg (Armandpour et al. 2023)."""

from __future__ import annotations

from torch import Tensor

from sds_core.protocols import NoisePrediction


def perpendicular(a: Tensor, b: Tensor) -> Tensor:
    """The part of each sample of `a` orthogonal to the same sample of `b`."""
    flat_a = a.flatten(1)
    flat_b = b.flatten(1)
    coef = (flat_a * flat_b).sum(1) / flat_b.pow(2).sum(1).clamp_min(1e-12)
    return (flat_a - coef[:, None] * flat_b).view_as(a)


def guided_noise(prediction: NoisePrediction, omega: float) -> Tensor:
    """eps_hat = (1 + omega) eps(z; y) - omega eps(z)  (DreamFusion §3.2).

    Written as eps_u + (1 + omega)(eps_c - eps_u); diffusers' guidance_scale is 1 + omega.
    With Perp-Neg negatives, the component of each (eps_neg - eps_u) perpendicular to
    (eps_c - eps_u) is subtracted with its weight before scaling.
    """
    uncond = prediction.uncond
    positive = prediction.cond - uncond
    delta = positive
    if prediction.negative is not None and prediction.negative_weights is not None:
        shape = (-1,) + (1,) * (positive.dim() - 1)
        for neg, weight in zip(prediction.negative, prediction.negative_weights, strict=True):
            delta = delta - weight.view(shape) * perpendicular(neg - uncond, positive)
    return uncond + (1.0 + omega) * delta
