"""The Gaussians' parameters, their initialisation and adaptive density control.

Parameters (3DGS, Kerbl et al. 2023, §4): means, log scales, quaternions (w, x, y, z), opacity
logits and colour logits (SH degree 0; colours = sigmoid(logits), so that the shading of
`sds_core.shading` gets an albedo in [0, 1]). Densification and pruning follow 3DGS §5 with
DreamGaussian's schedule (`GaussianConfig`): every `densify_every` steps, Gaussians whose mean
view-space gradient exceeds `grad_threshold` are cloned (small ones) or split in `split_into`
(large ones, scales / (0.8 x split_into), positions drawn from the Gaussian itself), and Gaussians
fainter than `min_opacity` are removed; every `opacity_reset_every` steps opacities are clamped to
`reset_opacity`. The optimiser's Adam moments follow every change of count: rows are dropped with
their Gaussians, new rows start at zero (as 3DGS's `cat_tensors_to_optimizer`). Parameters keep
their identity (their `.data` is replaced), so the optimiser's parameter groups stay valid, and a
checkpoint of any count loads into a model of any other (`load_state_dict` resizes first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sds_3d.meshes import Z_UP_TO_Y_UP
from sds_3d.run_mesh import run_mesh_path
from sds_core.api import ConfigError
from sds_gaussians.config import GaussianConfig
from sds_gaussians.rasterizer import quat_to_rotmat

PARAMETERS = ("means", "log_scales", "quats", "opacity_logits", "color_logits")
STATISTICS = ("grad_accum", "grad_count", "max_radii")
ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


def sphere_points(count: int, radius: float) -> Tensor:
    """`count` points uniform in a ball (DreamGaussian's initialisation), from torch's RNG."""
    direction = torch.nn.functional.normalize(torch.randn(count, 3), dim=-1)
    return direction * radius * torch.rand(count, 1) ** (1.0 / 3.0)


def surface_points(init: str, count: int) -> tuple[Tensor, Tensor | None]:
    """Points on the surface of a run's exported mesh (y-up file -> z-up world) and their colours."""
    import trimesh

    path = run_mesh_path(init, "sphere")
    try:
        mesh: Any = trimesh.load(path, force="mesh", process=False)
    except (ValueError, OSError, KeyError, IndexError, TypeError) as exc:  # what trimesh raises on a foreign file
        raise ConfigError(f"generator.init={init!r}: {path} is not a readable mesh ({exc})") from None
    if len(getattr(mesh, "faces", ())) == 0:
        raise ConfigError(f"generator.init={init!r}: {path} holds no triangles")
    seed = int(torch.randint(0, 2**31 - 1, ()).item())  # the run's seed decides the samples
    points, faces = trimesh.sample.sample_surface(mesh, count, seed=seed)
    colors = None
    visual = mesh.visual
    if getattr(visual, "kind", None) == "vertex":
        vertex_colors = np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
        colors = torch.as_tensor(vertex_colors[mesh.faces[faces]].mean(1))
    world = np.asarray(points, dtype=np.float64) @ Z_UP_TO_Y_UP  # inverse of v @ M.T (M orthogonal)
    return torch.as_tensor(world, dtype=torch.float32), colors


def nearest_distances(points: Tensor, k: int = 3) -> Tensor:
    """Mean distance to the k nearest other points (3DGS's distCUDA2 sets the initial scales)."""
    from scipy.spatial import cKDTree

    data = points.double().numpy()
    k = min(k, len(data) - 1)
    if k < 1:
        return torch.full((len(data),), 0.01)
    dist, _ = cKDTree(data).query(data, k=k + 1)
    mean_sq = (dist[:, 1:] ** 2).mean(1)
    return torch.as_tensor(np.sqrt(np.maximum(mean_sq, 1e-7)), dtype=torch.float32)


def exponential_lr(step: int, lr_init: float, lr_final: float, max_steps: int) -> float:
    """3DGS's get_expon_lr_func without its delay (DreamGaussian sets no delay steps):
    log-linear from lr_init to lr_final over max_steps, constant afterwards."""
    t = min(max(step / max(max_steps, 1), 0.0), 1.0)
    return math.exp(math.log(lr_init) * (1 - t) + math.log(lr_final) * t)


def _repeat_rows(t: Tensor, k: int) -> Tensor:
    """t stacked k times along its first axis."""
    return t.repeat(k, *([1] * (t.dim() - 1)))


class GaussianModel(nn.Module):
    """N Gaussians as parameters, and the statistics densification accumulates between steps."""

    means: nn.Parameter
    log_scales: nn.Parameter
    quats: nn.Parameter
    opacity_logits: nn.Parameter
    color_logits: nn.Parameter
    grad_accum: Tensor
    grad_count: Tensor
    max_radii: Tensor

    def __init__(self, cfg: GaussianConfig) -> None:
        super().__init__()
        self.cfg = cfg
        colors: Tensor | None = None
        if cfg.init == "sphere":
            means = sphere_points(cfg.num_points, cfg.init_radius)
        else:
            means, colors = surface_points(cfg.init, cfg.num_points)
        n = len(means)
        if colors is None:
            colors = torch.tensor(cfg.init_color, dtype=torch.float32).expand(n, 3)
        scales = nearest_distances(means) * cfg.init_scale
        self.means = nn.Parameter(means.contiguous())
        self.log_scales = nn.Parameter(torch.log(scales)[:, None].repeat(1, 3))
        self.quats = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1))
        self.opacity_logits = nn.Parameter(torch.full((n,), math.log(cfg.init_opacity / (1 - cfg.init_opacity))))
        self.color_logits = nn.Parameter(torch.logit(colors.clamp(0.02, 0.98)).contiguous())
        for name in STATISTICS:
            self.register_buffer(name, torch.zeros(n))

    # --- activations ----------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return int(self.means.shape[0])

    def scales(self) -> Tensor:
        return torch.exp(self.log_scales)

    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    def colors(self) -> Tensor:
        return torch.sigmoid(self.color_logits)

    def normals(self) -> Tensor:
        """(N, 3) unit normals: each Gaussian's shortest axis (sign left to the caller)."""
        rot = quat_to_rotmat(self.quats)
        shortest = self.log_scales.argmin(-1)
        return rot.gather(2, shortest[:, None, None].expand(-1, 3, 1)).squeeze(-1)

    # --- checkpoints with a changing count ------------------------------------------------------

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Resize the parameters and statistics to the checkpoint's count, then load (called by
        `load_state_dict` of this module or of any module holding it)."""
        for name in PARAMETERS + STATISTICS:
            saved = state_dict.get(prefix + name)
            current = getattr(self, name)
            if isinstance(saved, Tensor) and saved.shape != current.shape:
                current.data = torch.empty(saved.shape, device=current.device, dtype=current.dtype)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    # --- changing the set of Gaussians, and the optimiser's state with it -------------------------

    def _edit(
        self, optimizer: torch.optim.Optimizer | None, edit: Callable[[str, Tensor], Tensor], reset_state: bool = False
    ) -> None:
        """Apply `edit(name, tensor)` to every parameter, its Adam moments (new rows zero) and the
        statistics; `reset_state` zeroes the moments instead (3DGS's replace_tensor_to_optimizer)."""
        for name in PARAMETERS:
            param = getattr(self, name)
            state = optimizer.state.get(param) if optimizer is not None else None
            param.data = edit(name, param.data)
            if state:
                for key in ADAM_MOMENTS:
                    if key in state:
                        state[key] = torch.zeros_like(param.data) if reset_state else edit("", state[key])
        for name in STATISTICS:
            setattr(self, name, torch.zeros(self.count, device=self.means.device))

    def prune(self, keep: Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        self._edit(optimizer, lambda name, t: t[keep])

    def append(self, rows: dict[str, Tensor], optimizer: torch.optim.Optimizer | None) -> None:
        """Add Gaussians (parameter rows by name); their Adam moments start at zero."""

        def edit(name: str, t: Tensor) -> Tensor:
            extra = rows[name] if name else torch.zeros((len(rows["means"]), *t.shape[1:]), dtype=t.dtype)
            return torch.cat([t, extra.to(t)], 0)

        self._edit(optimizer, edit)

    def reset_opacity(self, optimizer: torch.optim.Optimizer | None) -> None:
        """3DGS: opacity = min(opacity, reset_opacity), the opacity's Adam moments zeroed."""
        level = torch.logit(torch.tensor(self.cfg.reset_opacity)).item()
        param = self.opacity_logits
        param.data = param.data.clamp(max=level)
        state = optimizer.state.get(param) if optimizer is not None else None
        if state:
            for key in ADAM_MOMENTS:
                if key in state:
                    state[key] = torch.zeros_like(param.data)

    @torch.no_grad()
    def add_statistics(self, means2d_grad: Tensor, radii: Tensor, width: int, height: int) -> None:
        """Accumulate the view-space gradient norms of the drawn Gaussians (gsplat's DefaultStrategy:
        pixel gradients to NDC, x W/2 and H/2, times the number of cameras)."""
        cameras = means2d_grad.shape[0]
        grad = means2d_grad * torch.tensor([width / 2 * cameras, height / 2 * cameras], device=means2d_grad.device)
        drawn = (radii > 0).all(-1)  # (B, N)
        self.grad_accum += (grad.norm(dim=-1) * drawn).sum(0)
        self.grad_count += drawn.sum(0)
        largest = (radii.max(-1).values * drawn).max(0).values.to(self.max_radii.dtype)
        self.max_radii.copy_(torch.maximum(self.max_radii, largest))

    @torch.no_grad()
    def densify_and_prune(self, optimizer: torch.optim.Optimizer | None) -> dict[str, int]:
        """3DGS densify_and_prune: clone, split, then prune the faint; returns the counts."""
        cfg = self.cfg
        grads = torch.nan_to_num(self.grad_accum / self.grad_count, nan=0.0)
        large = self.scales().max(-1).values > cfg.percent_dense * cfg.extent
        chosen = grads >= cfg.grad_threshold
        if cfg.max_gaussians > 0:  # keep the largest gradients within the budget
            cost = torch.where(large, cfg.split_into - 1, 1)
            # stable: ties (equal gradients, the -1 of the unchosen) keep index order, so the choice does
            # not depend on the sort's threading and a resumed run densifies as an unbroken one
            key = torch.where(chosen, grads, torch.full_like(grads, -1.0))
            order = torch.argsort(key, descending=True, stable=True)
            room = max(cfg.max_gaussians - self.count, 0)
            within = (cost[order].cumsum(0) <= room) & chosen[order]
            chosen = torch.zeros_like(chosen)
            chosen[order[within]] = True
        clone, split = chosen & ~large, chosen & large
        n = self.count
        rows = {name: getattr(self, name).data[clone] for name in PARAMETERS}
        if split.any():
            k = cfg.split_into
            scales = self.scales()[split].repeat(k, 1)
            samples = torch.normal(torch.zeros_like(scales), scales)
            rot = quat_to_rotmat(self.quats.data[split]).repeat(k, 1, 1)
            new = {name: _repeat_rows(getattr(self, name).data[split], k) for name in PARAMETERS}
            new["means"] = (rot @ samples[..., None]).squeeze(-1) + new["means"]
            new["log_scales"] = torch.log(scales / (0.8 * k))
            rows = {name: torch.cat([rows[name], new[name]], 0) for name in PARAMETERS}
        self.append(rows, optimizer)
        keep = torch.ones(self.count, dtype=torch.bool, device=self.means.device)
        keep[:n] = ~split  # split Gaussians are replaced by their samples
        keep &= self.opacities() >= cfg.min_opacity
        self.prune(keep, optimizer)
        return {"cloned": int(clone.sum()), "split": int(split.sum()), "pruned": int((~keep).sum()) - int(split.sum())}
