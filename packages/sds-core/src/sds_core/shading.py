"""DreamFusion shading (§3.1, A.2), shared by every 3D generator and by the `shapes` prior.

c = rho * (l_rho * max(0, n . (l - mu) / |l - mu|) + l_a), with l_a = 0.1 and l_rho = 0.9.
Before step 1,000 only albedo is rendered; afterwards a render is shaded with probability 0.75,
and a shaded render is textureless (rho = 1) with probability 0.5.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from sds_core.options_3d import ShadingOptions

ShadingMode = Literal["albedo", "lambertian", "textureless"]
SHADING_MODES: tuple[ShadingMode, ...] = ("albedo", "lambertian", "textureless")


# the options (torch-free, inherited by the generators' configs): sds_core.options_3d
ShadingConfig = ShadingOptions


def choose_shading(step: int, cfg: ShadingConfig, generator: torch.Generator | None = None) -> ShadingMode:
    """The shading mode of one render at `step`, drawn from the global torch RNG by default."""
    if step < cfg.albedo_only_steps:
        return "albedo"
    u = torch.rand(2, generator=generator).tolist()
    if u[0] >= cfg.shaded_probability:
        return "albedo"
    return "textureless" if u[1] < cfg.textureless_probability else "lambertian"


def shade(
    mode: str,
    albedo: Tensor,
    normals: Tensor | None,
    points: Tensor | None,
    light_position: Tensor | None,
    ambient: float = 0.1,
    diffuse: float = 0.9,
) -> Tensor:
    """Colour of surface points: albedo, or Lambertian with a point light (textureless: rho = 1).

    albedo, normals, points: (..., 3); light_position broadcasts against points.
    """
    if mode == "albedo":
        return albedo
    if normals is None or points is None or light_position is None:
        raise ValueError(f"shading mode {mode!r} needs normals, points and a light")
    to_light = light_position - points
    to_light = to_light / to_light.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    lambert = (normals * to_light).sum(-1, keepdim=True).clamp_min(0.0)
    light = diffuse * lambert + ambient
    if mode == "lambertian":
        return albedo * light
    if mode == "textureless":
        return light.expand_as(albedo)
    raise ValueError(f"unknown shading mode {mode!r}; accepted: {', '.join(SHADING_MODES)}")


def composite(rgb: Tensor, opacity: Tensor, background: Tensor | float) -> Tensor:
    """Alpha-composite premultiplied `rgb` (already weighted by opacity) over `background`."""
    return rgb + (1.0 - opacity) * background
