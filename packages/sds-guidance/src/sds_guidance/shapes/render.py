"""Reference renders of the `shapes` world: sphere tracing in pure torch, DreamFusion shading.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_core.files import atomic_write
from sds_core.protocols import CameraBatch
from sds_core.shading import ShadingConfig, shade
from sds_guidance.shapes.world import BOUND_RADIUS, PRIMITIVES, SDFS

RENDER_VERSION = 1  # bump when the world or the renderer changes: invalidates cached references


def sphere_trace(
    sdf: Callable[[Tensor], Tensor], origins: Tensor, dirs: Tensor, steps: int = 96, eps: float = 1e-4
) -> tuple[Tensor, Tensor]:
    """Hit mask and hit points of rays (N, 3) against the surface sdf = 0 inside the bounding sphere."""
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - BOUND_RADIUS**2
    disc = b * b - c
    valid = disc > 0
    root = disc.clamp_min(0).sqrt()
    t = (-b - root).clamp_min(0)
    t_far = -b + root
    active = valid.clone()
    hit = torch.zeros_like(valid)
    for _ in range(steps):
        if not bool(active.any()):
            break
        idx = active.nonzero(as_tuple=True)[0]
        d = sdf(origins[idx] + t[idx, None] * dirs[idx])
        t[idx] = t[idx] + d
        done = d.abs() < eps
        hit[idx] = hit[idx] | done
        gone = done | (t[idx] > t_far[idx])
        active[idx[gone]] = False
    points = origins + t[:, None] * dirs
    return hit, points


def sdf_normals(sdf: Callable[[Tensor], Tensor], points: Tensor, h: float = 1e-3) -> Tensor:
    """Unit outward normals by central differences of the SDF."""
    offsets = torch.eye(3, dtype=points.dtype, device=points.device) * h
    grad = torch.stack([sdf(points + o) - sdf(points - o) for o in offsets], dim=-1)
    return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def render_buffers(
    primitive: str, cameras: CameraBatch, supersample: int = 1, shading: ShadingConfig | None = None
) -> tuple[Tensor, Tensor]:
    """(coverage, lit) of one primitive seen by `cameras`, each (V, H, W) in [0, 1].

    lit is the mean over the pixel's supersamples of hit * light, with light the Lambertian term of
    `sds_core.shading.shade` (ambient 0.1, diffuse 0.9 with the camera's point light, §3.1).
    """
    shading = shading or ShadingConfig()
    sdf = SDFS[primitive]
    fine = cameras.with_resolution(cameras.width * supersample, cameras.height * supersample)
    origins, dirs = fine.rays()
    shape = dirs.shape[:-1]
    hit, points = sphere_trace(sdf, origins.reshape(-1, 3), dirs.reshape(-1, 3))
    normals = sdf_normals(sdf, points)
    light = fine.light_position.view(-1, 1, 1, 3).expand(*shape, 3).reshape(-1, 3)
    white = torch.ones_like(points)
    lit = shade("textureless", white, normals, points, light, shading.ambient, shading.diffuse)[:, 0]
    coverage = hit.float().view(shape)
    lit = (lit * hit.float()).view(shape)
    if supersample > 1:
        coverage = F.avg_pool2d(coverage.unsqueeze(1), supersample).squeeze(1)
        lit = F.avg_pool2d(lit.unsqueeze(1), supersample).squeeze(1)
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
        cov = self.coverage[primitive].unsqueeze(1)
        lit = self.lit[primitive].unsqueeze(1)
        bg = background.view(1, 3, 1, 1) * (1 - cov)
        if mode == "textureless":
            return lit.expand(-1, 3, -1, -1) + bg
        assert rho is not None
        surface = cov if mode == "albedo" else lit
        return rho.view(1, 3, 1, 1) * surface + bg


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
    """Trace every primitive from the reference cameras, or load the result from the disk cache."""
    key = json.dumps(
        [RENDER_VERSION, PRIMITIVES, asdict(camera_config), resolution, views, seed, supersample], default=str
    )
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        path = cache_dir / "shapes" / f"references-{resolution}px-{views}v-{digest}.pt"
        if path.is_file():
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
                return ReferenceViews(**data)
            except (OSError, RuntimeError, TypeError, KeyError):
                pass  # a damaged cache entry is rebuilt
    cams = reference_cameras(camera_config, resolution, views, seed)
    coverage, lit = [], []
    for primitive in PRIMITIVES:
        c, li = render_buffers(primitive, cams, supersample)
        coverage.append(c)
        lit.append(li)
    position = cams.position
    refs = ReferenceViews(
        coverage=torch.stack(coverage),
        lit=torch.stack(lit),
        directions=position / position.norm(dim=-1, keepdim=True),
        elevation=cams.elevation,
        azimuth=cams.azimuth,
        views=list(cams.views),
    )
    if path is not None:
        atomic_write(path, lambda tmp: torch.save(asdict(refs), tmp))
    return refs
