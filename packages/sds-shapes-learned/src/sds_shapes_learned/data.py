"""Training images of the shapes world: A.2 cameras traced once, composed per sample.

Each camera is traced once for every primitive (`sds_shapes.render.trace_buffers`, exact ray
casting with its own A.2 light); any colour and shading mode of that view is then composed exactly
from the colour-independent buffers (`sds_shapes.render.compose`), so a batch costs a gather and
a few products instead of a trace.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from sds_core.api import (
    SHADING_MODES,
    VIEWS,
    CameraBatch,
    CameraConfig,
    CameraSampler,
    atomic_write,
    load_plain,
    view_prompt,
)
from sds_shapes.render import RENDER_VERSION, trace_buffers
from sds_shapes.world import COLOURS, ShapeObject
from sds_shapes_learned.config import TrainConfig

CHUNK = 256  # cameras per trace


@dataclass
class RenderBank:
    """Buffers of every primitive from the same cameras, quantised to 8 bits as images are."""

    coverage: Tensor  # (P, N, H, W) uint8
    lit: Tensor  # (P, N, H, W) uint8
    views: Tensor  # (N,) index into VIEWS


@dataclass
class Batch:
    images: Tensor  # (B, 3, H, W) in [-1, 1]
    captions: list[str]
    primitive: Tensor  # (B,) index into the config's primitives
    colour: Tensor  # (B,) index into the config's colours
    mode: Tensor  # (B,) index into SHADING_MODES


def _quantise(x: Tensor) -> Tensor:
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def _camera_chunks(cfg: TrainConfig, n: int) -> Iterator[CameraBatch]:
    """The bank's `n` A.2 cameras, seeded by cfg.seed, in chunks of CHUNK (the one draw both
    `build_bank` and `bank_cameras` make, so their cameras are the same)."""
    sampler = CameraSampler(replace(CameraConfig(), width=cfg.resolution, height=cfg.resolution))
    generator = torch.Generator().manual_seed(cfg.seed)
    for start in range(0, n, CHUNK):
        yield sampler.sample(min(CHUNK, n - start), generator=generator)


def build_bank(cfg: TrainConfig, cameras: int | None = None, cache: Path | None = None) -> RenderBank:
    """Trace `cameras` A.2 cameras (seeded by cfg.seed) for cfg.primitives, or load them from `cache`."""
    n = cameras or cfg.cameras
    key = json.dumps([RENDER_VERSION, cfg.primitives, cfg.resolution, n, cfg.supersample, cfg.seed])
    path = None
    if cache is not None:
        path = cache / f"bank-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
        if path.is_file():
            return RenderBank(**load_plain(path, kind="render bank cache"))
    coverage: list[Tensor] = []
    lit: list[Tensor] = []
    views: list[int] = []
    for cams in _camera_chunks(cfg, n):
        cov, light = trace_buffers(cams, cfg.supersample, primitives=cfg.primitives)
        coverage.append(_quantise(cov))
        lit.append(_quantise(light))
        views.extend(VIEWS.index(v) for v in cams.views)
    bank = RenderBank(torch.cat(coverage, 1), torch.cat(lit, 1), torch.tensor(views))
    if path is not None:
        atomic_write(path, lambda tmp: torch.save(vars(bank), tmp))
    return bank


def bank_cameras(cfg: TrainConfig, cameras: int | None = None) -> Tensor:
    """(N, 3) elevation (degrees), azimuth (degrees) and distance of the bank's cameras, drawn
    again as `build_bank` draws them (the same seed and chunks; no tracing), so that a cached bank
    needs no new field."""
    rows = [
        torch.stack([cams.elevation, cams.azimuth, cams.distance], dim=-1).float()
        for cams in _camera_chunks(cfg, cameras or cfg.cameras)
    ]
    return torch.cat(rows)


@dataclass
class PairBatch:
    """Zero-1-to-3's training pairs: a target view and a reference view of one object."""

    images: Tensor  # (B, 3, H, W) target views in [-1, 1]
    references: Tensor  # (B, 3, H, W) reference views of the same objects in [-1, 1]
    cameras: Tensor  # (B, 4) the target's camera relative to the reference's (`relative_cameras`)
    dropped: Tensor  # (B,) bool: the condition dropped (classifier-free guidance)
    target: Tensor  # (B,) the target views' cameras (indices into the bank)
    reference: Tensor  # (B,) the reference views' cameras
    primitive: Tensor
    colour: Tensor
    mode: Tensor


def relative_cameras(target: Tensor, reference: Tensor) -> Tensor:
    """(B, 4) Zero-1-to-3's relative camera of target from reference (rows of `bank_cameras`):
    [rad((90 - e) - (90 - e0)), sin(rad(a - a0)), cos(rad(a - a0)), r - r0], the `zero123` encoding
    of `sds_guidance.zero123.relative_camera`."""
    polar = torch.deg2rad((90.0 - target[:, 0]) - (90.0 - reference[:, 0]))
    turn = torch.deg2rad(target[:, 1] - reference[:, 1])
    return torch.stack([polar, torch.sin(turn), torch.cos(turn), target[:, 2] - reference[:, 2]], dim=-1)


def sample_pairs(
    bank: RenderBank, angles: Tensor, cfg: TrainConfig, size: int, generator: torch.Generator
) -> PairBatch:
    """`size` random (object, shading mode, target camera, reference camera) pairs: the same
    primitive, colour and mode from two independent A.2 cameras, each lit by its own A.2 light;
    `angles`: `bank_cameras` of the bank. A share `caption_dropout` of them has its condition
    dropped (the reference image and camera), as classifier-free guidance over the image needs."""
    n = bank.views.shape[0]
    target = torch.randint(0, n, (size,), generator=generator)
    reference = torch.randint(0, n, (size,), generator=generator)
    prim = torch.randint(0, len(cfg.primitives), (size,), generator=generator)
    col = torch.randint(0, len(cfg.colours), (size,), generator=generator)
    mode = torch.multinomial(torch.tensor(cfg.shading_probabilities), size, replacement=True, generator=generator)
    dropped = torch.rand(size, generator=generator) < cfg.caption_dropout
    images = render_images(bank, cfg, target, prim, col, mode) * 2 - 1
    references = render_images(bank, cfg, reference, prim, col, mode) * 2 - 1
    cameras = relative_cameras(angles[target], angles[reference])
    return PairBatch(images, references, cameras, dropped, target, reference, prim, col, mode)


def caption(obj: ShapeObject, view: str | None) -> str:
    """The object's prompt, with the §3.2 view suffix when a view is given."""
    return obj.prompt if view is None else view_prompt(obj.prompt, view)


def sample_batch(bank: RenderBank, cfg: TrainConfig, size: int, generator: torch.Generator) -> Batch:
    """`size` random (camera, primitive, colour, shading mode) images with their captions."""
    n = bank.views.shape[0]
    cam = torch.randint(0, n, (size,), generator=generator)
    prim = torch.randint(0, len(cfg.primitives), (size,), generator=generator)
    col = torch.randint(0, len(cfg.colours), (size,), generator=generator)
    mode = torch.multinomial(torch.tensor(cfg.shading_probabilities), size, replacement=True, generator=generator)
    suffix = torch.rand(size, generator=generator) < cfg.view_suffix_probability
    dropped = torch.rand(size, generator=generator) < cfg.caption_dropout
    images = render_images(bank, cfg, cam, prim, col, mode)
    captions = []
    for i in range(size):
        obj = ShapeObject(cfg.primitives[int(prim[i])], cfg.colours[int(col[i])])
        view = VIEWS[int(bank.views[cam[i]])] if bool(suffix[i]) else None
        captions.append("" if bool(dropped[i]) else caption(obj, view))
    return Batch(images * 2 - 1, captions, prim, col, mode)


def render_images(bank: RenderBank, cfg: TrainConfig, cam: Tensor, prim: Tensor, col: Tensor, mode: Tensor) -> Tensor:
    """(B, 3, H, W) images in [0, 1] of the given cameras, primitives, colours and shading modes.

    The composition of `sds_shapes.render.compose` (shading is linear in the albedo), with one
    colour and mode per row instead of every colour for every view."""
    coverage = (bank.coverage[prim, cam].float() / 255)[:, None]  # (B, 1, H, W)
    lit = (bank.lit[prim, cam].float() / 255)[:, None]
    albedo = torch.tensor([COLOURS[c] for c in cfg.colours])[col]  # (B, 3)
    textureless = mode == SHADING_MODES.index("textureless")
    rho = torch.where(textureless[:, None], torch.ones_like(albedo), albedo)[:, :, None, None]
    surface = torch.where((mode == SHADING_MODES.index("albedo")).view(-1, 1, 1, 1), coverage, lit)
    background = torch.tensor(cfg.background).view(1, 3, 1, 1)
    return rho * surface + background * (1 - coverage)
