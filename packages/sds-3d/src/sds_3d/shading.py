"""DreamFusion's shading modes (albedo, lambertian, textureless; `sds_core.api.shade`) applied
per view to a batch of surface points: per pixel (B, H, W, 3), per Gaussian (B, N, 3), or per
sample of flattened rays (S, 3) with the view of each sample."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sds_core.api import ShadingConfig, shade

SHADED: tuple[str, ...] = ("lambertian", "textureless")  # the modes that need normals and a light


def is_shaded(modes: Sequence[str]) -> bool:
    """Some view needs normals and a light."""
    return any(m in SHADED for m in modes)


def shade_views(
    modes: Sequence[str],
    albedo: Tensor,
    normals: Tensor,
    points: Tensor,
    light_position: Tensor,
    options: ShadingConfig,
    view: Tensor | None = None,
) -> Tensor:
    """`albedo` shaded with each view's mode (`modes[v]`, v < B) and its light (`light_position`, (B, 3)).

    view None: dim 0 is the view, (B, ..., 3); albedo and points may broadcast along it (a (1, N, 3)
    albedo shared by the views). view (S,): row i of the (S, 3) tensors belongs to view[i]. Each
    shaded mode present is computed for every row and selected where the row's view uses it;
    textureless (rho = 1) takes the lit result's full shape.
    """
    if not is_shaded(modes):
        return albedo
    light = light_position.to(points)
    light = light[view] if view is not None else light.view(-1, *[1] * (points.ndim - 2), 3)
    rgb = albedo
    for mode in SHADED:
        if mode not in modes:
            continue
        base = albedo
        if mode == "textureless":  # the albedo only gives the shape
            base = albedo.expand(torch.broadcast_shapes(albedo.shape, normals.shape, points.shape, light.shape))
        lit = shade(mode, base, normals, points, light, options.ambient, options.diffuse)
        chosen = torch.tensor([m == mode for m in modes], device=points.device)
        if view is not None:
            chosen = chosen[view]
        rgb = torch.where(chosen.view(*chosen.shape, *[1] * (lit.ndim - chosen.ndim)), lit, rgb)
    return rgb
