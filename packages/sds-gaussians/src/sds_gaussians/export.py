"""Final artefacts of the `gaussians` generator.

- `gaussians.ply`: the standard 3DGS point cloud (Kerbl et al. 2023's `save_ply`, read by common
  splat viewers): float properties x, y, z, nx, ny, nz (zeros), f_dc_0..2 (SH degree-0
  coefficients, colour = 0.5 + C0 f_dc), f_rest_0..44 (zeros: degree 3 layout, so loaders that
  expect it read the file), opacity (logit), scale_0..2 (log), rot_0..3 (w, x, y, z). Positions
  stay in sds's z-up world (splat files carry no up convention).
- the mesh, as DreamGaussian extracts it (Tang et al. 2024, §3.2; `extract_mesh`): the density
  sum_i o_i exp(-d^T Sigma_i^-1 d / 2) on a grid, marching cubes at `density_threshold`
  (scikit-image, through `sds_3d.export`), coloured by the density-weighted Gaussian colours and
  written by the shared final/ writer (GLB, OBJ, PLY, turntable, viewer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from sds_3d.export import MESH_FORMATS, density_grid, marching_cubes, requested_formats, write_final
from sds_core.api import ExportContext, atomic_write
from sds_gaussians.gaussians import GaussianModel
from sds_gaussians.rasterizer import covariances

if TYPE_CHECKING:
    from sds_gaussians.generator import GaussianGenerator

SH_C0 = 0.28209479177387814  # Y_0^0: colour = 0.5 + SH_C0 * f_dc (3DGS's RGB2SH / SH2RGB)
PLY_REST = 45  # f_rest_* of SH degree 3 (3 x 15), zeros here
CUTOFF = 3.0  # a Gaussian's density is negligible beyond 3 standard deviations of its largest axis


@dataclass
class GaussianField:
    """The Gaussians as world-space callables on (M, 3) points (a snapshot, without gradients)."""

    means: Tensor
    precisions: Tensor  # (N, 3, 3) inverse covariances
    opacities: Tensor
    colors: Tensor
    reach: Tensor  # (N,) culling radius

    @classmethod
    @torch.no_grad()
    def of(cls, g: GaussianModel) -> GaussianField:
        scales = g.scales().detach().float()
        cov = covariances(g.quats.detach().float(), scales)
        return cls(
            g.means.detach().float(),
            torch.linalg.inv(cov.double()).float(),
            g.opacities().detach().float(),
            g.colors().detach().float(),
            CUTOFF * scales.max(-1).values,
        )

    @torch.no_grad()
    def _weights(self, points: Tensor, chunk: int = 1024, cell: float = 0.1) -> tuple[Tensor, Tensor]:
        """Density (M,) and the density-weighted colour sum (M, 3). The points are grouped into
        cells of side `cell` and evaluated `chunk` at a time in that order, each chunk against
        the Gaussians whose reach meets its bounding box."""
        points = points.to(self.means)
        density = torch.zeros(len(points), device=points.device)
        color = torch.zeros(len(points), 3, device=points.device)
        if len(points) == 0:
            return density, color
        cells = torch.floor((points - points.min(0).values) / cell).long()
        side = int(cells.max()) + 1
        order = torch.argsort((cells[:, 0] * side + cells[:, 1]) * side + cells[:, 2], stable=True)
        for start in range(0, len(points), chunk):
            rows = order[start : start + chunk]
            p = points[rows]
            low, high = p.min(0).values, p.max(0).values
            near = ((self.means - self.reach[:, None] <= high) & (self.means + self.reach[:, None] >= low)).all(-1)
            idx = near.nonzero().squeeze(-1)
            if len(idx) == 0:
                continue
            d = p[:, None, :] - self.means[idx][None]  # (m, k, 3)
            q = (torch.einsum("mki,kij->mkj", d, self.precisions[idx]) * d).sum(-1)  # Mahalanobis^2
            w = self.opacities[idx][None] * torch.exp(-0.5 * q)
            density[rows] = w.sum(-1)
            color[rows] = w @ self.colors[idx]
        return density, color

    def density(self, points: Tensor) -> Tensor:
        return self._weights(points)[0]

    def albedo(self, points: Tensor) -> Tensor:
        """The density-weighted colour; the nearest Gaussian's where the density vanishes."""
        density, color = self._weights(points)
        out = color / density.clamp_min(1e-12)[:, None]
        empty = density < 1e-8
        if empty.any():
            nearest = torch.cdist(points[empty].to(self.means), self.means).argmin(-1)
            out[empty] = self.colors[nearest]
        return out.clamp(0.0, 1.0)


def ply_bytes(g: GaussianModel) -> bytes:
    """The standard 3DGS PLY (binary little endian) of the Gaussians."""
    with torch.no_grad():
        means = g.means.detach().float().cpu().numpy()
        f_dc = ((g.colors().detach().float().cpu().numpy()) - 0.5) / SH_C0
        opacity = g.opacity_logits.detach().float().cpu().numpy()[:, None]
        scales = g.log_scales.detach().float().cpu().numpy()
        quats = torch.nn.functional.normalize(g.quats.detach().float(), dim=-1).cpu().numpy()
    names = ["x", "y", "z", "nx", "ny", "nz", *(f"f_dc_{i}" for i in range(3))]
    names += [f"f_rest_{i}" for i in range(PLY_REST)]
    names += ["opacity", *(f"scale_{i}" for i in range(3)), *(f"rot_{i}" for i in range(4))]
    n = len(means)
    columns = [means, np.zeros((n, 3)), f_dc, np.zeros((n, PLY_REST)), opacity, scales, quats]
    data = np.concatenate(columns, axis=1).astype("<f4")
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + data.tobytes()


def extract_surface(
    generator: GaussianGenerator, resolution: int, level: float
) -> tuple[np.ndarray, np.ndarray, GaussianField] | None:
    """DreamGaussian's mesh: marching cubes of the density grid; None when there is no surface."""
    field = GaussianField.of(generator.gaussians)
    grid = density_grid(field.density, resolution, generator.cfg.mesh_bound)
    if not grid.min() < level < grid.max():
        return None
    verts, faces = marching_cubes(grid, level, generator.cfg.mesh_bound)
    return verts, faces, field


def export_gaussians(generator: GaussianGenerator, out_dir: Path, context: ExportContext) -> list[Path]:
    """gaussians.ply, then what every 3D generator writes (mesh files, turntable, viewer).

    `context.resolution` and `context.threshold` override `mesh_resolution` and `density_threshold`."""
    cfg = generator.cfg
    formats = requested_formats(context, cfg.export_formats)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [atomic_write(out_dir / "gaussians.ply", ply_bytes(generator.gaussians))]
    resolution = context.resolution or cfg.mesh_resolution
    level = context.threshold if context.threshold is not None else cfg.density_threshold
    wants_mesh = any(f in formats for f in (*MESH_FORMATS, "html"))
    found = extract_surface(generator, resolution, level) if wants_mesh else None
    surface = None
    if found is not None:
        verts, faces, field = found
        surface = (verts, faces, field.albedo)
    return paths + write_final(generator, out_dir, context, formats, surface)
