"""Ray sampling inside the bounding sphere, with empty-space skipping.

Two samplers produce the same `Samples`:
- `TorchSampler` (CPU, or CUDA without nerfacc's kernels): stratified intervals over the chord of
  the sphere, the field evaluated at each interval's centre; an occupancy grid in PyTorch marks
  which samples the field must evaluate, the others have zero density. The result is batched
  (n_rays, n_samples), the layout nerfacc's rendering functions accept on any device.
- `NerfaccSampler` (CUDA): nerfacc's `OccGridEstimator.sampling`, packed samples with ray indices.
nerfacc's CUDA-only functions are only ever called from `NerfaccSampler`, on CUDA tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DensityFn = Callable[[Tensor], Tensor]


@dataclass
class Samples:
    """Samples along rays: batched (n_rays, N) with an evaluation mask, or packed with ray indices."""

    t_starts: Tensor
    t_ends: Tensor
    t_points: Tensor  # where the field is evaluated in each interval (its centre)
    n_rays: int
    mask: Tensor | None = None  # batched: samples the field must evaluate (others: density 0)
    ray_indices: Tensor | None = None  # packed: the ray of each sample

    @property
    def packed(self) -> bool:
        return self.ray_indices is not None

    def evaluated(self) -> int:
        """How many samples the field evaluates."""
        if self.mask is not None:
            return int(self.mask.sum())
        return int(self.t_starts.numel())


def sphere_intersect(origins: Tensor, dirs: Tensor, radius: float) -> tuple[Tensor, Tensor, Tensor]:
    """Entry and exit distances of unit-direction rays with the sphere |x| = radius, and a hit mask."""
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - radius**2
    disc = b * b - c
    hit = disc > 0
    s = torch.sqrt(disc.clamp_min(0.0))
    near = (-b - s).clamp_min(0.0)
    far = (-b + s).clamp_min(0.0)
    hit = hit & (far > near)
    return torch.where(hit, near, 0.0), torch.where(hit, far, 0.0), hit


def density_threshold(alpha: float, step: float) -> float:
    """The density whose alpha over a step of length `step` is `alpha` (1 - exp(-tau step) = alpha)."""
    return -math.log(1.0 - alpha) / step


class OccupancyGrid(nn.Module):
    """A dense grid over [-radius, radius]^3 of which cells may hold density (PyTorch, any device).

    The per-cell density is an exponential moving average of its maximum over random points in the
    cell (as nerfacc's estimator does); a cell is occupied above `threshold` (density units),
    dilated by one cell so that thin features sampled between cell points are kept (and so that
    the field can grow into neighbouring cells). Before the first update every cell is occupied (no skipping).
    """

    density: Tensor
    binary: Tensor
    updates: Tensor
    inside: Tensor
    centers: Tensor

    def __init__(self, radius: float, resolution: int, threshold: float, decay: float = 0.95) -> None:
        super().__init__()
        self.radius, self.resolution = radius, resolution
        self.threshold, self.decay = threshold, decay
        g = resolution
        self.register_buffer("density", torch.zeros(g, g, g))
        self.register_buffer("binary", torch.ones(g, g, g, dtype=torch.bool))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        axis = (torch.arange(g, dtype=torch.float32) + 0.5) / g * 2 * radius - radius
        centers = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
        cell = 2 * radius / g
        # cells wholly outside the sphere never hold anything the renderer samples
        self.register_buffer("inside", centers.norm(dim=-1) <= radius + cell * math.sqrt(3) / 2, persistent=False)
        self.register_buffer("centers", centers.reshape(-1, 3), persistent=False)

    @torch.no_grad()
    def update(self, density_fn: DensityFn, jitter: bool = True, chunk: int = 65536) -> None:
        cell = 2 * self.radius / self.resolution
        points = self.centers
        if jitter:
            points = points + (torch.rand(points.shape, device=points.device) - 0.5) * cell
        values = torch.cat([density_fn(points[i : i + chunk]).float() for i in range(0, len(points), chunk)])
        values = values.view_as(self.density) * self.inside
        self.density.copy_(torch.maximum(self.density * self.decay, values))
        occupied = (self.density > self.threshold).float()[None, None]
        dilated = F.max_pool3d(occupied, kernel_size=3, stride=1, padding=1)[0, 0] > 0
        self.binary.copy_(dilated & self.inside)
        self.updates += 1

    def query(self, points: Tensor) -> Tensor:
        """Occupied (bool) at world points (..., 3); points outside the grid are empty."""
        g = self.resolution
        idx = torch.floor((points + self.radius) / (2 * self.radius) * g).long()
        inside = ((idx >= 0) & (idx < g)).all(-1)
        idx = idx.clamp(0, g - 1)
        return self.binary[idx[..., 0], idx[..., 1], idx[..., 2]] & inside

    def occupied_fraction(self) -> float:
        return float(self.binary[self.inside].float().mean())


class TorchSampler:
    """Stratified intervals over the sphere chord, evaluated at their centres; the occupancy grid
    masks the empty ones."""

    def __init__(self, radius: float, samples_per_ray: int) -> None:
        self.radius, self.n = radius, samples_per_ray

    def __call__(self, origins: Tensor, dirs: Tensor, grid: OccupancyGrid | None, stratified: bool) -> Samples:
        near, far, hit = sphere_intersect(origins, dirs, self.radius)
        edges = torch.linspace(0.0, 1.0, self.n + 1, device=origins.device, dtype=origins.dtype)
        edges = edges.expand(origins.shape[0], -1)
        if stratified:  # mip-NeRF's stratification: each inner edge uniform between its neighbours' midpoints
            mids = (edges[:, 1:] + edges[:, :-1]) / 2
            inner = mids[:, :-1] + (mids[:, 1:] - mids[:, :-1]) * torch.rand_like(mids[:, 1:])
            edges = torch.cat([edges[:, :1], inner, edges[:, -1:]], dim=1)  # near and far stay
        bins = near[:, None] + (far - near)[:, None] * edges  # (R, N + 1)
        t_starts, t_ends = bins[:, :-1], bins[:, 1:]
        # the field is evaluated at each interval's centre, where mip-NeRF's (and A.2's) IPE
        # Gaussian is centred
        t_points = (t_starts + t_ends) / 2
        mask = hit[:, None].expand_as(t_starts)
        if grid is not None:
            points = origins[:, None, :] + dirs[:, None, :] * t_points[..., None]
            mask = mask & grid.query(points)
        return Samples(t_starts, t_ends, t_points, origins.shape[0], mask=mask)


class NerfaccSampler:
    """nerfacc's occupancy-grid estimator (CUDA only): marching with skipping, packed samples."""

    def __init__(self, radius: float, resolution: int, step_size: float, device: torch.device) -> None:
        from nerfacc import OccGridEstimator

        r = radius
        self.estimator: Any = OccGridEstimator(roi_aabb=[-r, -r, -r, r, r, r], resolution=resolution).to(device)
        self.radius, self.step_size = radius, step_size

    def _occupancy_fn(self, density_fn: DensityFn) -> DensityFn:
        return lambda x: density_fn(x) * self.step_size  # nerfacc thresholds alpha ~ tau * step

    def update(self, step: int, density_fn: DensityFn, threshold: float, every: int, warmup: int, decay: float) -> None:
        self.estimator.train()
        self.estimator.update_every_n_steps(
            step, self._occupancy_fn(density_fn), occ_thre=threshold, ema_decay=decay, warmup_steps=warmup, n=every
        )

    @torch.no_grad()
    def rebuild(self, density_fn: DensityFn, threshold: float) -> None:
        """The grid from the current field alone, every cell evaluated (a loaded or fresh estimator
        holds an empty grid until training updates it, and would render only background)."""
        self.estimator.occs.zero_()
        self.estimator._update(  # the public update_every_n_steps only runs in training mode
            step=0, occ_eval_fn=self._occupancy_fn(density_fn), occ_thre=threshold, warmup_steps=1
        )

    def __call__(self, origins: Tensor, dirs: Tensor, density_fn: DensityFn | None, stratified: bool) -> Samples:
        near, far, hit = sphere_intersect(origins, dirs, self.radius)

        def sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
            assert density_fn is not None
            t = (t_starts + t_ends)[:, None] / 2
            return density_fn(origins[ray_indices] + dirs[ray_indices] * t)

        with torch.no_grad():
            ray_indices, t_starts, t_ends = self.estimator.sampling(
                origins,
                dirs,
                sigma_fn=sigma_fn if density_fn is not None else None,
                t_min=near,
                t_max=torch.where(hit, far, near),
                render_step_size=self.step_size,
                stratified=stratified,
            )
        t_points = (t_starts + t_ends) / 2
        return Samples(t_starts, t_ends, t_points, origins.shape[0], ray_indices=ray_indices.long())
