"""Tiny 3D objects that are none of sds's generators: what a fourth generator needs for final/."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from sds_core.api import EXPORT_FORMATS, CameraBatch, ExportOptions

SMALL = {"texture_size": 32, "video_frames": 2, "video_resolution": 16}


class Recorder:
    """eval/train, `render_chunked` (a flat grey image) and a log of what was called in which mode."""

    def __init__(self, formats: tuple[str, ...] = EXPORT_FORMATS) -> None:
        self.cfg = ExportOptions(**SMALL, export_formats=formats)  # type: ignore[arg-type]
        self.training = True
        self.log: list[tuple[str, bool]] = []

    def eval(self) -> Recorder:
        self.training = False
        return self

    def train(self, mode: bool = True) -> Recorder:
        self.training = mode
        return self

    def render_chunked(self, cameras: CameraBatch, mode: str) -> tuple[Tensor, Tensor]:
        self.log.append((mode, self.training))
        b, h, w = cameras.batch_size, cameras.height, cameras.width
        return torch.full((b, 3, h, w), 0.5), torch.ones(b, 1, h, w)


class Ball(Recorder):
    """A `DensityField`: density exp(sharpness (radius - |x|)), albedo varying with x."""

    radius, sharpness, level = 0.5, 10.0, 1.0

    def density_field(self) -> tuple[Any, Any, float]:
        def density(points: Tensor) -> Tensor:
            return torch.exp(self.sharpness * (self.radius - points.norm(dim=-1)))

        def albedo(points: Tensor) -> Tensor:
            x = points[:, :1].clamp(-1, 1) * 0.5 + 0.5
            return torch.cat([x, 1 - x, torch.full_like(x, 0.25)], -1)

        self.log.append(("density_field", self.training))
        return density, albedo, self.level

    def level_radius(self, level: float) -> float:
        """Where the density equals `level`."""
        return self.radius - float(np.log(level)) / self.sharpness


class Box(Recorder):
    """A `SurfaceMesh`: a unit box whose 8 corners have 8 different colours."""

    colors = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=np.float64) * 200 + 20

    def surface_mesh(self) -> Any:
        import trimesh

        box = trimesh.creation.box(extents=(0.6, 0.6, 0.6))
        rgba = np.concatenate([self.colors, np.full((8, 1), 255)], -1).astype(np.uint8)
        self.log.append(("surface_mesh", self.training))
        return trimesh.Trimesh(box.vertices, box.faces, vertex_colors=rgba, process=False)


class FineBox(Box):
    """A `SurfaceMesh` with `VertexAlbedo`: float colours finer than the mesh's 8 bits."""

    def vertex_albedo(self) -> Tensor:
        return torch.full((8, 3), 0.3)  # 76.5 / 255: between two 8-bit levels
