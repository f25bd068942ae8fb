"""The DreamFusion field: an MLP from a 3D point to density tau and albedo rho (§3.1, A.2)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sds_core.api import compiled
from sds_nerf.config import NerfConfig
from sds_nerf.encoding import (
    FrequencyEncoding,
    HashGridEncoding,
    TcnnHashGridEncoding,
    annealed_variance,
    tcnn_available,
)


class ResBlock(nn.Module):
    """Pre-activation residual block: (LayerNorm, SiLU, Linear) x 2 + skip (A.2: SiLU, LayerNorm)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1, self.fc1 = nn.LayerNorm(width), nn.Linear(width, width)
        self.norm2, self.fc2 = nn.LayerNorm(width), nn.Linear(width, width)

    def forward(self, h: Tensor) -> Tensor:
        y = self.fc1(F.silu(self.norm1(h)))
        y = self.fc2(F.silu(self.norm2(y)))
        return h + y


def density_blob(points: Tensor, kind: str, scale: float | None = None, std: float | None = None) -> Tensor:
    """The pre-activation density bias near the origin.

    "dreamfusion" (A.2): lambda exp(-|mu|^2 / (2 sigma^2)), lambda = 5, sigma = 0.2.
    "magic3d" (Lin et al. 2023): lambda (1 - |mu| / sigma), lambda = 10, sigma = 0.5.
    """
    sq = (points**2).sum(-1)
    if kind == "dreamfusion":
        lam, sig = scale if scale is not None else 5.0, std if std is not None else 0.2
        return lam * torch.exp(-sq / (2 * sig**2))
    if kind == "magic3d":
        lam, sig = scale if scale is not None else 10.0, std if std is not None else 0.5
        return lam * (1 - torch.sqrt(sq + 1e-12) / sig)
    if kind == "none":
        return torch.zeros_like(sq)
    raise ValueError(f"unknown density blob {kind!r}; accepted: dreamfusion, magic3d, none")


def unit_normals(grad: Tensor, epsilon: float) -> Tensor:
    """n = -grad tau / max(|grad tau|, epsilon) (§3.1).

    Where the density is flat (empty space, a grid's untouched cells) |grad tau| is ~0, and the
    derivative of the normalisation, ~1 / |grad tau|, multiplied SDS's gradient through shading
    by up to 1e13 with a 1e-12 floor (measured: benchmarks/regularizer_balance.py); the floor
    `epsilon` bounds it, and leaves normals shorter than one only where the field has no surface.
    """
    return -grad / grad.norm(dim=-1, keepdim=True).clamp_min(epsilon)


class NerfField(nn.Module):
    """mu -> (tau, rho): encoding, a ResNet MLP, exp density (+ blob) and sigmoid albedo.

    The IPE variance is a function of the training step, which is a buffer (`anneal_step`): it is
    saved and restored with the run, so that renders after a resume (export, evaluation) use the
    encoding that training used.
    """

    anneal_step: Tensor

    def __init__(self, cfg: NerfConfig, device: torch.device | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.radius = cfg.radius
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.long, device=device))
        self._variance = self._variance_at(0)
        if cfg.encoding in ("ipe", "frequency"):
            self.encoder: nn.Module = FrequencyEncoding(3, cfg.frequencies)
        elif cfg.encoding == "hashgrid":
            args = (cfg.hash_levels, cfg.hash_features, cfg.hash_log2_size)
            res = (cfg.hash_base_resolution, cfg.hash_max_resolution)
            on_cuda = device is not None and device.type == "cuda"
            use_tcnn = cfg.hash_backend == "tcnn" or (cfg.hash_backend == "auto" and on_cuda and tcnn_available())
            self.encoder = TcnnHashGridEncoding(*args, *res) if use_tcnn else HashGridEncoding(*args, *res)
        else:
            raise ValueError(f"unknown encoding {cfg.encoding!r}")
        self.inp = nn.Linear(int(self.encoder.out_dim), cfg.hidden)  # type: ignore[arg-type]
        self.blocks = nn.ModuleList(ResBlock(cfg.hidden) for _ in range(cfg.blocks))
        self.out_norm = nn.LayerNorm(cfg.hidden)
        self.head = nn.Linear(cfg.hidden, 4)  # raw density and albedo logits
        self._compiled: Callable[[Tensor, Tensor | None], Tensor] | None = None  # compile_features

    def _variance_at(self, step: int) -> float | None:
        cfg = self.cfg
        if cfg.encoding != "ipe":
            return None
        return annealed_variance(step, cfg.ipe_variance_start, cfg.ipe_variance_end, cfg.ipe_anneal_steps)

    @property
    def variance(self) -> float | None:
        """The IPE Sigma at the stored step (A.2); None for the other encodings."""
        return self._variance

    def set_step(self, step: int) -> None:
        """Anneal the IPE variance (A.2); other encodings ignore the step."""
        self.anneal_step.fill_(int(step))
        self._variance = self._variance_at(int(step))

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: object) -> None:
        """The loaded step sets the variance. Checkpoints written before the step was saved take
        the end of the anneal (their trained step is unknown here)."""
        state_dict.setdefault(prefix + "anneal_step", torch.tensor(self.cfg.ipe_anneal_steps))
        super()._load_from_state_dict(state_dict, prefix, *args)  # type: ignore[arg-type]
        self._variance = self._variance_at(int(self.anneal_step))

    def compile_features(self) -> None:
        """torch.compile the encoding and MLP (`generator.compile`), one graph for every sample count."""
        self._compiled = compiled(self._mlp, True, dynamic=True, backend=self.cfg.compile_backend)

    def _features(self, points: Tensor) -> Tensor:
        # compiled graphs are differentiated once: a gradient with respect to the points (autograd
        # normals, differentiated again by the loss) is taken through the eager MLP
        if self._compiled is not None and not points.requires_grad:
            variance = None if self.variance is None else points.new_full((), self.variance)  # no recompile a step
            return self._compiled(points, variance)  # type: ignore[no-any-return]
        return self._mlp(points, self.variance)

    def _mlp(self, points: Tensor, variance: float | Tensor | None) -> Tensor:
        if self.cfg.encoding == "hashgrid":
            enc = self.encoder((points / self.radius + 1) / 2)
        else:
            enc = self.encoder(points, variance)
        h = self.inp(enc)
        for block in self.blocks:
            h = block(h)
        return self.head(F.silu(self.out_norm(h)))  # type: ignore[no-any-return]

    def _activate(self, raw: Tensor, points: Tensor) -> Tensor:
        raw = raw + self.cfg.density_bias + density_blob(points, self.cfg.blob, self.cfg.blob_scale, self.cfg.blob_std)
        if self.cfg.density_activation == "softplus":
            return F.softplus(raw)
        # exp, clamped before the exponential as "truncated exp" does, to keep gradients finite
        return torch.exp(raw.clamp(max=15.0))

    def forward(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Density tau (...,) and albedo rho (..., 3) at world points (..., 3)."""
        out = self._features(points)
        return self._activate(out[..., 0], points), torch.sigmoid(out[..., 1:])

    def density(self, points: Tensor) -> Tensor:
        return self._activate(self._features(points)[..., 0], points)

    def with_normals(self, points: Tensor, create_graph: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Density, albedo and normals n = -grad tau / |grad tau| (§3.1)."""
        if self.cfg.normals == "finite_difference":
            tau, rho = self(points)
            return tau, rho, self.finite_difference_normals(points)
        with torch.enable_grad():
            pts = points if points.requires_grad else points.detach().requires_grad_(True)
            tau, rho = self(pts)
            (grad,) = torch.autograd.grad(tau.sum(), pts, create_graph=create_graph and torch.is_grad_enabled())
        if not create_graph:
            tau, rho, grad = tau.detach(), rho.detach(), grad.detach()
        return tau, rho, unit_normals(grad, self.cfg.normal_epsilon)

    def finite_difference_normals(self, points: Tensor) -> Tensor:
        """Central differences of tau along x, y, z (6 density evaluations)."""
        eps = self.cfg.finite_difference_eps
        offsets = torch.eye(3, device=points.device, dtype=points.dtype) * eps
        shifted = torch.cat([points[None] + offsets.view(3, *([1] * (points.dim() - 1)), 3) * s for s in (1, -1)])
        tau = self.density(shifted)  # (6, ...)
        grad = torch.stack([(tau[i] - tau[i + 3]) / (2 * eps) for i in range(3)], dim=-1)
        return unit_normals(grad, self.cfg.normal_epsilon)


class VoxelGridField(nn.Module):
    """A dense voxel grid of raw density and albedo logits, trilinearly interpolated (a draft field).

    Not the paper's field (§3.1 uses an MLP): DVGO-style explicit grids (Sun et al. 2022) converge
    in far fewer steps on a CPU. The grid spans [-bound, bound]^3 (bound: the scene sphere's
    radius unless set); the same activations as `NerfField` follow: exp density (+ bias and blob),
    sigmoid albedo. Normals are central differences of the interpolated density (no double
    backward), or autograd through `grid_sample` when asked.
    """

    def __init__(self, cfg: NerfConfig, device: torch.device | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.radius = cfg.radius
        self.bound = cfg.grid_bound if cfg.grid_bound is not None else cfg.radius
        g = cfg.grid_resolution
        # channels: raw density, albedo logits; stored (1, 4, X, Y, Z)
        self.grid = nn.Parameter(torch.zeros(1, 4, g, g, g, device=device))

    def set_step(self, step: int) -> None:
        """The grid has nothing to anneal."""

    def _sample(self, points: Tensor, channels: slice) -> Tensor:
        shape = points.shape[:-1]
        # grid_sample reads (x, y, z) as (W, H, D): the grid is stored (D, H, W) = (X, Y, Z)
        coords = (points.reshape(1, -1, 1, 1, 3) / self.bound).flip(-1)
        grid = self.grid[:, channels]
        out = F.grid_sample(grid, coords, mode="bilinear", padding_mode="border", align_corners=True)
        return out.reshape(grid.shape[1], -1).t().reshape(*shape, grid.shape[1])

    def _activate(self, raw: Tensor, points: Tensor) -> Tensor:
        cfg = self.cfg
        raw = raw + cfg.density_bias + density_blob(points, cfg.blob, cfg.blob_scale, cfg.blob_std)
        tau = F.softplus(raw) if cfg.density_activation == "softplus" else torch.exp(raw.clamp(max=15.0))
        # nothing outside the grid's cube
        return torch.where((points.abs() <= self.bound).all(-1), tau, torch.zeros_like(tau))

    def forward(self, points: Tensor) -> tuple[Tensor, Tensor]:
        out = self._sample(points, slice(0, 4))
        return self._activate(out[..., 0], points), torch.sigmoid(out[..., 1:])

    def density(self, points: Tensor) -> Tensor:
        return self._activate(self._sample(points, slice(0, 1))[..., 0], points)

    def with_normals(self, points: Tensor, create_graph: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        if self.cfg.normals == "autograd":
            return NerfField.with_normals(self, points, create_graph)  # type: ignore[arg-type]
        tau, rho = self(points)
        normals = self.finite_difference_normals(points)
        if not create_graph:
            normals = normals.detach()
        return tau, rho, normals

    def finite_difference_normals(self, points: Tensor) -> Tensor:
        return NerfField.finite_difference_normals(self, points)  # type: ignore[arg-type]

    def total_variation(self) -> Tensor:
        """Mean squared difference of neighbouring raw densities (a smoothness prior on the grid)."""
        d = self.grid[0, 0]
        dx, dy, dz = d[1:] - d[:-1], d[:, 1:] - d[:, :-1], d[:, :, 1:] - d[:, :, :-1]
        return (dx**2).mean() + (dy**2).mean() + (dz**2).mean()
