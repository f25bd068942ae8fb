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
from sds_shapes.world import BOUND_RADIUS, MARK_RGB, MARKS, PRIMITIVES

Marks = tuple[Tensor, Tensor]  # (mark coverage, mark lit) (P, B, H, W): the part painted MARK_RGB

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
    coverage, lit, _ = _trace(cameras, supersample, shading, primitives, with_marks=False)
    return coverage, lit


def trace_layers(
    cameras: CameraBatch,
    supersample: int = 1,
    shading: ShadingConfig | None = None,
    primitives: tuple[str, ...] = PRIMITIVES,
) -> tuple[Tensor, Tensor, Marks | None]:
    """`trace_buffers`, and the same two buffers of the hits on a marked primitive's mark
    (`world.MARKS`, zero for the others) when any primitive has one, else None."""
    return _trace(cameras, supersample, shading, primitives, with_marks=any(p in MARKS for p in primitives))


def _trace(
    cameras: CameraBatch,
    supersample: int,
    shading: ShadingConfig | None,
    primitives: tuple[str, ...],
    with_marks: bool,
) -> tuple[Tensor, Tensor, Marks | None]:
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

    def image(values: Tensor) -> Tensor:  # (P, R) per ray -> (P, B, h, w) per pixel
        full = blank.index_copy(1, rays, values).view(-1, *shape)
        return F.avg_pool2d(full, supersample) if supersample > 1 else full

    coverage = image(hit.to(o.dtype))
    lit = image(torch.where(hit, light_term, 0.0))
    if not with_marks:
        return coverage, lit, None
    marked = _on_marks(primitives, points) & hit
    return coverage, lit, (image(marked.to(o.dtype)), image(torch.where(marked, light_term, 0.0)))


def _on_marks(primitives: tuple[str, ...], points: Tensor) -> Tensor:
    """(P, R) bool: each primitive's hit points (P, R, 3) that lie on its mark (none unmarked)."""
    return torch.stack(
        [
            MARKS[name](p) if name in MARKS else p.new_zeros(p.shape[0], dtype=torch.bool)
            for name, p in zip(primitives, points, strict=True)
        ]
    )


@dataclass
class ReferenceViews:
    """Colour-independent buffers of every primitive from the same V reference cameras."""

    coverage: Tensor  # (P, V, H, W)
    lit: Tensor  # (P, V, H, W)
    directions: Tensor  # (V, 3) unit vectors from the origin towards each camera
    elevation: Tensor  # (V,) degrees
    azimuth: Tensor  # (V,) degrees
    views: list[str]  # (V,) view labels (§3.2)
    marks: Marks | None = None  # a marked primitive's mark buffers (`trace_layers`), when any

    def image(self, primitive: int, mode: str, rho: Tensor | None, background: Tensor) -> Tensor:
        """(V, 3, H, W) RGB in [0, 1] of one primitive in one shading mode (rho: albedo (3,))."""
        albedo = None if rho is None else rho.view(1, 3)
        one = slice(primitive, primitive + 1)
        marks = None if self.marks is None else (self.marks[0][one], self.marks[1][one])
        return compose(self.coverage[one], self.lit[one], mode, albedo, background, marks)[0, 0]


def compose(
    coverage: Tensor, lit: Tensor, mode: str, albedo: Tensor | None, background: Tensor, marks: Marks | None = None
) -> Tensor:
    """Images (P, C, V, 3, H, W) in [0, 1] of P primitives in C colours (albedo (C, 3)) from
    their buffers (P, V, H, W); textureless images have no colour (C = 1, albedo None). With
    `marks` (`trace_layers`), a mark's pixels are MARK_RGB instead of the albedo (still linear:
    + (MARK_RGB - albedo) * the mark's buffer)."""
    cov = coverage[:, None, :, None]  # (P, 1, V, 1, H, W)
    bg = background.to(coverage).view(1, 1, 1, 3, 1, 1) * (1 - cov)
    if mode == "textureless":
        return lit[:, None, :, None].expand(-1, -1, -1, 3, -1, -1) + bg
    assert albedo is not None
    rho = albedo.to(coverage).view(1, -1, 1, 3, 1, 1)
    surface = cov if mode == "albedo" else lit[:, None, :, None]
    images = rho * surface + bg
    if marks is None:
        return images
    mark = (marks[0] if mode == "albedo" else marks[1])[:, None, :, None]
    return images + (coverage.new_tensor(MARK_RGB).view(1, 1, 1, 3, 1, 1) - rho) * mark


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
    primitives: tuple[str, ...] = PRIMITIVES,
) -> ReferenceViews:
    """Trace every primitive from the reference cameras, or load the traced buffers from the disk cache.

    The cameras are sampled again either way (cheap, seeded); the cache holds only the buffers,
    checked against their inputs, shapes and digests by `sds_core.cache` (any mismatch: traced again).
    `primitives`: the world's (`world.world_primitives`; the default world keeps its cache key).
    """
    cams = reference_cameras(camera_config, resolution, views, seed)
    key = json.dumps(
        [RENDER_VERSION, primitives, asdict(camera_config), resolution, views, seed, supersample], default=str
    )
    path = None
    buffers = None
    names = ["coverage", "lit"] + (["mark_coverage", "mark_lit"] if any(p in MARKS for p in primitives) else [])
    if cache_dir is not None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        path = cache_dir / "shapes" / f"references-{resolution}px-{views}v-{digest}.pt"
        spec = TensorSpec((len(primitives), views, resolution, resolution), cams.position.dtype)
        buffers = cache_load(path, key, dict.fromkeys(names, spec), cache_dir)
    if buffers is None:
        if len(names) > 2:  # a marked primitive: its mark's buffers too
            coverage, lit, marks = trace_layers(cams, supersample, primitives=primitives)
        else:
            (coverage, lit), marks = trace_buffers(cams, supersample, primitives=primitives), None
        if path is not None:
            traced = {"coverage": coverage, "lit": lit, **_mark_buffers(marks)}
            cache_save(path, key, traced, cache_dir)
    else:
        coverage, lit = buffers["coverage"], buffers["lit"]
        marks = (buffers["mark_coverage"], buffers["mark_lit"]) if "mark_coverage" in names else None
    position = cams.position
    return ReferenceViews(
        coverage=coverage,
        lit=lit,
        directions=position / position.norm(dim=-1, keepdim=True),
        elevation=cams.elevation,
        azimuth=cams.azimuth,
        views=list(cams.views),
        marks=marks,
    )


def _mark_buffers(marks: Marks | None) -> dict[str, Tensor]:
    """The mark buffers as the reference cache holds them (none without a marked primitive)."""
    return {} if marks is None else {"mark_coverage": marks[0], "mark_lit": marks[1]}
