"""DreamFusion's regularisers (A.2): orientation and opacity losses; entropy as an option."""

from __future__ import annotations

import torch
from torch import Tensor


def annealed_weight(step: int, start: float, end: float, steps: int) -> float:
    """A weight moving linearly from `start` to `end` over `steps`, then `end` (A.2's orientation weight)."""
    frac = min(max(step, 0) / max(steps, 1), 1.0)
    return start + (end - start) * frac


def orientation_loss(weights: Tensor, normals: Tensor, dirs: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Ref-NeRF's R_o = sum_i sg(w_i) max(0, n_i . d)^2 per ray, averaged over rays (A.2).

    d is the ray direction (camera to scene): it penalises normals that face away from the camera.
    weights (M,), normals (M, 3), dirs (M, 3), ray_indices (M,).
    """
    per_sample = weights.detach() * (normals * dirs).sum(-1).clamp_min(0.0) ** 2
    per_ray = torch.zeros(n_rays, device=weights.device, dtype=per_sample.dtype).index_add(0, ray_indices, per_sample)
    return per_ray.mean()


def opacity_loss(opacity: Tensor, epsilon: float = 0.01) -> Tensor:
    """A.2: sqrt((sum_i w_i)^2 + 0.01), averaged over rays; discourages filling empty space."""
    return torch.sqrt(opacity**2 + epsilon).mean()


def entropy_loss(opacity: Tensor, eps: float = 1e-5) -> Tensor:
    """Binary entropy of the accumulated opacity: pushes each ray to fully empty or fully opaque."""
    a = opacity.clamp(eps, 1 - eps)
    return (-(a * torch.log(a) + (1 - a) * torch.log(1 - a))).mean()
