"""Reference renders of the `shapes` world: exact ray casting in torch (`trace.py`), DreamFusion shading.

A view of a primitive is traced once; its colour-independent buffers (coverage, and coverage
times the light term of `sds_core.shading.shade`) give the albedo, lambertian and textureless
images of every colour exactly, because shading is linear in the albedo:
    albedo      = rho * coverage                       + background * (1 - coverage)
    lambertian  = rho * mean(hit * light)              + background * (1 - coverage)
    textureless =       mean(hit * light)              + background * (1 - coverage)
(means over the supersamples of a pixel).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from sds_core.api import (
    CameraBatch,
    CameraConfig,
    CameraSampler,
    ShadingConfig,
    TensorSpec,
    cache_load,
    cache_save,
    shade,
)
from sds_shapes.trace import HITS, NORMALS, dot
from sds_shapes.world import BOUND_RADIUS, PRIMITIVES

RENDER_VERSION = 2  # bump when the world or the renderer changes: invalidates cached references


def trace_buffers(
    cameras: CameraBatch,
    supersample: int = 1,
    shading: ShadingConfig | None = None,
    primitives: tuple[str, ...] = PRIMITIVES,
) -> tuple[Tensor, Tensor]:
    """(coverage, lit) of each primitive seen by each camera, each (P, B, H, W) in [0, 1].

    One set of rays serves every primitive; hits are exact (`trace.HITS`). lit is the mean over
    the pixel's supersamples of hit * light, with light the Lambertian term of
    `sds_core.shading.shade` (ambient 0.1, diffuse 0.9 with the camera's point light, §3.1).
    """
    shading = shading or ShadingConfig()
    fine = cameras.with_resolution(cameras.width * supersample, cameras.height * supersample)
    origins, dirs = fine.rays()
    shape = dirs.shape[:-1]
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    light = fine.light_position.view(-1, 1, 1, 3).expand(*shape, 3).reshape(-1, 3)
    # only rays that meet the world's bounding sphere can hit a primitive
    b = dot(o, d)
    disc = b * b - dot(o, o) + BOUND_RADIUS**2
    near = (disc > 0) & (disc.clamp_min(0).sqrt() > b)  # the far intersection is ahead
    rays = near.nonzero().squeeze(1)
    o, d, light = o[rays], d[rays], light[rays]
    t = torch.stack([HITS[primitive](o, d) for primitive in primitives])  # (P, R)
    hit = torch.isfinite(t)
    points = o + torch.where(hit, t, 0.0)[..., None] * d  # (P, R, 3)
    normals = torch.stack([NORMALS[primitive](p) for primitive, p in zip(primitives, points, strict=True)])
    light_term = shade("textureless", points, normals, points, light, shading.ambient, shading.diffuse)[..., 0]
    blank = o.new_zeros(len(primitives), near.shape[0])
    coverage = blank.index_copy(1, rays, hit.to(o.dtype)).view(-1, *shape)
    lit = blank.index_copy(1, rays, torch.where(hit, light_term, 0.0)).view(-1, *shape)
    if supersample > 1:  # (P, B, h, w)
        coverage = F.avg_pool2d(coverage, supersample)
        lit = F.avg_pool2d(lit, supersample)
    return coverage, lit


@dataclass
class ReferenceViews:
    """Colour-independent buffers of every primitive from the same V reference cameras."""

    coverage: Tensor  # (P, V, H, W)
    lit: Tensor  # (P, V, H, W)
    directions: Tensor  # (V, 3) unit vectors from the origin towards each camera
    elevation: Tensor  # (V,) degrees
    azimuth: Tensor  # (V,) degrees
    views: list[str]  # (V,) view labels (§3.2)

    def image(self, primitive: int, mode: str, rho: Tensor | None, background: Tensor) -> Tensor:
        """(V, 3, H, W) RGB in [0, 1] of one primitive in one shading mode (rho: albedo (3,))."""
        albedo = None if rho is None else rho.view(1, 3)
        return compose(
            self.coverage[primitive : primitive + 1], self.lit[primitive : primitive + 1], mode, albedo, background
        )[0, 0]


def compose(coverage: Tensor, lit: Tensor, mode: str, albedo: Tensor | None, background: Tensor) -> Tensor:
    """Images (P, C, V, 3, H, W) in [0, 1] of P primitives in C colours (albedo (C, 3)) from
    their buffers (P, V, H, W); textureless images have no colour (C = 1, albedo None)."""
    cov = coverage[:, None, :, None]  # (P, 1, V, 1, H, W)
    bg = background.to(coverage).view(1, 1, 1, 3, 1, 1) * (1 - cov)
    if mode == "textureless":
        return lit[:, None, :, None].expand(-1, -1, -1, 3, -1, -1) + bg
    assert albedo is not None
    surface = cov if mode == "albedo" else lit[:, None, :, None]
    return albedo.to(coverage).view(1, -1, 1, 3, 1, 1) * surface + bg


def reference_cameras(camera_config: CameraConfig, resolution: int, views: int, seed: int) -> CameraBatch:
    """V cameras and lights from DreamFusion's training distribution (A.2), at the guidance resolution."""
    cfg = replace(camera_config, width=resolution, height=resolution, batch_size=views)
    generator = torch.Generator().manual_seed(seed)
    return CameraSampler(cfg).sample(views, generator=generator)


def build_references(
    camera_config: CameraConfig,
    resolution: int,
    views: int,
    seed: int,
    supersample: int,
    cache_dir: Path | None,
) -> ReferenceViews:
    """Trace every primitive from the reference cameras, or load the traced buffers from the disk cache.

    The cameras are sampled again either way (cheap, seeded); the cache holds only the buffers,
    checked against their inputs, shapes and digests by `sds_core.cache` (any mismatch: traced again).
    """
    cams = reference_cameras(camera_config, resolution, views, seed)
    key = json.dumps(
        [RENDER_VERSION, PRIMITIVES, asdict(camera_config), resolution, views, seed, supersample], default=str
    )
    path = None
    buffers = None
    if cache_dir is not None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        path = cache_dir / "shapes" / f"references-{resolution}px-{views}v-{digest}.pt"
        spec = TensorSpec((len(PRIMITIVES), views, resolution, resolution), cams.position.dtype)
        buffers = cache_load(path, key, {"coverage": spec, "lit": spec}, cache_dir)
    if buffers is None:
        coverage, lit = trace_buffers(cams, supersample)
        if path is not None:
            cache_save(path, key, {"coverage": coverage, "lit": lit}, cache_dir)
    else:
        coverage, lit = buffers["coverage"], buffers["lit"]
    position = cams.position
    return ReferenceViews(
        coverage=coverage,
        lit=lit,
        directions=position / position.norm(dim=-1, keepdim=True),
        elevation=cams.elevation,
        azimuth=cams.azimuth,
        views=list(cams.views),
    )
