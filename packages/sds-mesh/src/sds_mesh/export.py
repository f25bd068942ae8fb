"""Final artefacts of the `mesh` generator through the shared writer of final/ (`sds_3d.export`).

The exporter bakes a colour callable into an xatlas texture and writes GLB, OBJ + MTL + PNG and
PLY, a turntable and the viewer page; here the callable reads the mesh's own vertex colours,
interpolated barycentrically on the nearest face, and the turntable renders the mesh.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from sds_3d.export import requested_formats, write_final
from sds_core.api import ExportContext

if TYPE_CHECKING:
    from sds_mesh.generator import MeshGenerator


class VertexColorField:
    """Colour at points on (or near) a mesh: vertex colours interpolated on the closest face.

    Candidate faces are the k nearest by centroid (scipy's KD-tree); the closest point of each is
    approximated by its clipped barycentric projection, which is exact for points on the surface
    (the texels and vertices the exporter asks about).
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, candidates: int = 8) -> None:
        from scipy.spatial import cKDTree

        self.vertices = vertices.astype(np.float64)
        self.faces = faces
        self.colors = colors.astype(np.float32)
        self.tree = cKDTree(self.vertices[faces].mean(1))
        self.k = min(candidates, len(faces))

    def __call__(self, points: Tensor) -> Tensor:
        p = points.detach().cpu().double().numpy()
        _, cand = self.tree.query(p, k=self.k)
        cand = cand.reshape(len(p), self.k)
        tri = self.vertices[self.faces[cand]]  # (N, K, 3, 3)
        a, b, c = tri[:, :, 0], tri[:, :, 1], tri[:, :, 2]
        v0, v1, v2 = b - a, c - a, p[:, None] - a
        d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
        d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
        den = d00 * d11 - d01 * d01
        den = np.where(np.abs(den) < 1e-18, 1e-18, den)
        w1 = (d11 * d20 - d01 * d21) / den
        w2 = (d00 * d21 - d01 * d20) / den
        bary = np.clip(np.stack([1 - w1 - w2, w1, w2], -1), 0.0, None)
        bary /= bary.sum(-1, keepdims=True).clip(1e-12)
        closest = (bary[..., None] * tri).sum(-2)
        best = np.linalg.norm(closest - p[:, None], axis=-1).argmin(-1)
        rows = np.arange(len(p))
        face_colors = self.colors[self.faces[cand[rows, best]]]  # (N, 3, 3)
        out = (bary[rows, best][..., None] * face_colors).sum(1)
        return torch.as_tensor(out, dtype=torch.float32, device=points.device)


def export_mesh(generator: MeshGenerator, out_dir: Path, context: ExportContext) -> list[Path]:
    """GLB, OBJ + MTL + PNG, PLY, turntable MP4 / GIF and index.html, as the NeRF writes them.

    `context.resolution` and `context.threshold` (marching cubes) do not apply to a mesh."""
    formats = requested_formats(context, generator.cfg.export_formats)
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            verts = generator.vertices().float().cpu().numpy()
            colors = generator.colors().float().cpu().numpy()
        faces = generator.faces.cpu().numpy()
        surface = (verts, faces, VertexColorField(verts, faces, colors))
        return write_final(generator, Path(out_dir), context, formats, surface)
    finally:
        generator.train(was_training)
