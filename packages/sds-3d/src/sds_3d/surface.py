"""The surface final/ writes, from a generator's geometry protocols (`sds_core.api`): a
`SurfaceMesh`'s mesh with its vertex colours, or a `DensityField`'s isosurface (marching cubes)
with its albedo callable."""

from __future__ import annotations

import warnings
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from sds_3d.fields import PointFn, density_grid
from sds_core.api import DensityField, ExportContext, SurfaceMesh

#: z-up world vertices (V, 3) float32, faces (F, 3) int64, colour at (N, 3) world points
Surface = tuple[np.ndarray, np.ndarray, PointFn]


@runtime_checkable
class VertexAlbedo(Protocol):
    """A `SurfaceMesh` whose vertex colours are finer than its mesh's 8 bits (the `mesh`
    generator's sigmoid colours): final/ bakes these (V, 3) values in [0, 1] instead."""

    def vertex_albedo(self) -> Tensor: ...


def marching_cubes(grid: np.ndarray, level: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The `level` isosurface of a node grid over [-radius, radius]^3 (scikit-image's marching cubes).

    Faces are wound so that normals point outward, towards lower density.
    """
    from skimage import measure

    if not grid.min() < level < grid.max():
        raise ValueError(
            f"no surface at density level {level:g} (the field ranges {grid.min():.3g} .. {grid.max():.3g})"
        )
    spacing = 2 * radius / (grid.shape[0] - 1)
    # density grows inwards: scikit-image orients faces towards increasing values, so flip them
    verts, faces, _, _ = measure.marching_cubes(grid, level=level, spacing=(spacing,) * 3, gradient_direction="ascent")
    return (verts - radius).astype(np.float32), faces.astype(np.int64)


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


def mesh_surface(generator: SurfaceMesh) -> Surface:
    """The mesh of `surface_mesh()`, coloured by its vertex colours (`VertexAlbedo`'s when offered)."""
    mesh = generator.surface_mesh()
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if isinstance(generator, VertexAlbedo):
        with torch.no_grad():
            colors = generator.vertex_albedo().float().cpu().numpy()
    else:
        colors = np.asarray(mesh.visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
    return vertices, faces, VertexColorField(vertices, faces, colors)


def volume_surface(generator: DensityField, context: ExportContext, bound: float, resolution: int) -> Surface | None:
    """The isosurface of `density_field()` on a grid over [-bound, bound]^3 (`--resolution`, else
    `resolution` nodes a side) at `--threshold` (else the field's level); None, with a warning,
    when the field does not cross that level."""
    density, albedo, level = generator.density_field()
    level = context.threshold if context.threshold is not None else level
    grid = density_grid(density, context.resolution or resolution, bound, context.device)
    try:
        vertices, faces = marching_cubes(grid, level, bound)
    except ValueError as exc:
        warnings.warn(f"no mesh written: {exc}; pass another --threshold", stacklevel=2)
        return None
    return vertices, faces, albedo


def surface_of(
    generator: object, context: ExportContext, bound: float | None, resolution: int | None
) -> Surface | None:
    """A `SurfaceMesh`'s mesh, else a `DensityField`'s isosurface (which needs `bound` and
    `resolution`), else None (a generator without geometry: final/ holds no mesh)."""
    if isinstance(generator, SurfaceMesh):
        return mesh_surface(generator)
    if isinstance(generator, DensityField):
        if bound is None or resolution is None:
            raise TypeError("a DensityField's final/ needs the bound and resolution of its marching-cubes grid")
        return volume_surface(generator, context, bound, resolution)
    return None
