"""The Gaussians as a density field, as DreamGaussian extracts its mesh (Tang et al. 2024, §3.2;
`extract_mesh`): the density sum_i o_i exp(-d^T Sigma_i^-1 d / 2) and the density-weighted colour
at world points. The generator offers them as `density_field()`, for final/'s mesh (marching
cubes at `density_threshold`, `sds_3d.final`) and for `sds eval geometry`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sds_gaussians.gaussians import GaussianModel
from sds_gaussians.rasterizer import covariances

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
