"""DreamFusion's regularisers (A.2): orientation and opacity losses; entropy as an option.

Each is a per-ray quantity reduced over the rays of a batch by `reduce_rays`: "sum" (default)
sums over the pixels of each image and averages over the images, as the SDS loss does
(sds_core.losses.sds: 1/2 |x - sg(x - g)|^2 summed over pixels, so each pixel gets the full
w(t)(eps_hat - eps)); the paper's weights then weigh a pixel's regulariser against that pixel's
SDS gradient. "mean" averages over rays (a weight then acts 1/pixels as strongly).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Reduction = Literal["sum", "mean"]


def reduce_rays(per_ray: Tensor, batch_size: int, reduction: Reduction = "sum") -> Tensor:
    """Sum over each image's pixels and mean over images ("sum"), or mean over all rays ("mean")."""
    if reduction == "sum":
        return per_ray.sum() / max(batch_size, 1)
    return per_ray.mean()


def annealed_weight(step: int, start: float, end: float, steps: int) -> float:
    """A weight moving linearly from `start` to `end` over `steps`, then `end` (A.2's orientation weight)."""
    frac = min(max(step, 0) / max(steps, 1), 1.0)
    return start + (end - start) * frac


def orientation_loss(weights: Tensor, normals: Tensor, dirs: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Ref-NeRF's R_o = sum_i sg(w_i) max(0, n_i . d)^2 per ray (A.2), (n_rays,).

    d is the ray direction (camera to scene): it penalises normals that face away from the camera.
    weights (M,), normals (M, 3), dirs (M, 3), ray_indices (M,).
    """
    per_sample = weights.detach() * (normals * dirs).sum(-1).clamp_min(0.0) ** 2
    per_ray = torch.zeros(n_rays, device=weights.device, dtype=per_sample.dtype).index_add(0, ray_indices, per_sample)
    return per_ray


def opacity_loss(opacity: Tensor, epsilon: float = 0.01) -> Tensor:
    """A.2: sqrt((sum_i w_i)^2 + 0.01) per ray; discourages filling empty space."""
    return torch.sqrt(opacity**2 + epsilon)


def entropy_loss(opacity: Tensor, eps: float = 1e-5) -> Tensor:
    """Binary entropy of the accumulated opacity per ray: pushes each ray to fully empty or fully opaque."""
    a = opacity.clamp(eps, 1 - eps)
    return -(a * torch.log(a) + (1 - a) * torch.log(1 - a))
