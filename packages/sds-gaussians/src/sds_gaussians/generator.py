"""The `gaussians` generator: 3D Gaussian splatting behind the sds Generator protocol.

DreamGaussian (Tang et al. 2024, §3.1) optimises Gaussians with SDS; here the rasteriser is
gsplat on CUDA or the PyTorch rasteriser (`sds_gaussians.rasterizer`) elsewhere, and the shading
is DreamFusion's (§3.1, A.2; `sds_3d.shading`), applied per Gaussian: each Gaussian's albedo is
lit at its mean with its normal, then composited over the background (`sds_3d.background`). The
normal is the Gaussian's shortest axis, turned towards the camera (as GaussianShader and 2DGS take
it): a flat Gaussian's shortest axis is its surface normal, it costs no extra pass, and it is exact
per splat where normals from the rendered depth would need finite differences across 48-pixel
silhouettes.

Densification changes the number of Gaussians after optimiser steps: the loop calls
`after_step(optimizer, step)` (`sds_core.protocols.AdaptiveParameters`). final/ is
`gaussians.ply` (`sds_gaussians.export`), then `sds_3d.final`'s mesh of `density_field()`
(`sds_gaussians.field`), turntable and viewer.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sds_3d.background import build_background, ray_background
from sds_3d.chunked import render_chunked
from sds_3d.final import write_final
from sds_3d.rays import camera_rays
from sds_3d.shading import is_shaded, shade_views
from sds_core.api import (
    BuildContext,
    CameraBatch,
    ConfigError,
    ExportContext,
    Render,
    ShadingConfig,
    choose_shading,
    composite,
)
from sds_gaussians.config import GaussianConfig
from sds_gaussians.export import write_ply
from sds_gaussians.field import GaussianField
from sds_gaussians.gaussians import GaussianModel, exponential_lr
from sds_gaussians.rasterizer import Rasterizer, RasterOutput, Splats, TorchRasterizer


def gsplat_available() -> bool:
    """gsplat and `packaging` (which gsplat imports without declaring it) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("gsplat", "packaging"))


def build_rasterizer(cfg: GaussianConfig, device: torch.device) -> Rasterizer:
    """gsplat on CUDA when installed (`auto`), else the PyTorch rasteriser."""
    kind = cfg.rasterizer
    if kind == "gsplat" and device.type != "cuda":
        raise ConfigError("generator.rasterizer=gsplat needs a CUDA device (gsplat rasterises with CUDA kernels)")
    if kind == "gsplat" and not gsplat_available():
        raise ConfigError('generator.rasterizer=gsplat needs gsplat and packaging: pip install "sds-gaussians[gsplat]"')
    if kind == "gsplat" or (kind == "auto" and device.type == "cuda" and gsplat_available()):
        from sds_gaussians.gsplat_backend import GsplatRasterizer

        return GsplatRasterizer(cfg.eps2d)
    if kind not in ("auto", "torch", "gsplat"):
        raise ConfigError(f"unknown generator.rasterizer {kind!r}; accepted: auto, torch, gsplat")
    return TorchRasterizer(cfg.max_pairs, cfg.eps2d)


class GaussianGenerator(nn.Module):
    """Gaussians (`GaussianModel`) rasterised, shaded and composited over the background."""

    view_dependent = True

    def __init__(self, config: GaussianConfig, context: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg = config
        self.gaussians = GaussianModel(cfg)
        self.background = build_background(cfg, context.guidance_facts())
        self.shading_cfg: ShadingConfig = cfg  # a 3D generator's config holds the shading options
        self.rasterizer = build_rasterizer(cfg, torch.device(context.device))
        self._last: tuple[RasterOutput, int, int] | None = None  # the training render's projection

    # --- rendering ------------------------------------------------------------------------------

    def splats(self, cameras: CameraBatch, modes: list[str]) -> Splats:
        """The activated Gaussians with one colour set per camera, shaded per Gaussian."""
        g = self.gaussians
        means, albedo = g.means, g.colors()
        b = cameras.batch_size
        colors = albedo[None].expand(b, -1, -1)
        if is_shaded(modes):
            normals = g.normals()[None]
            to_camera = cameras.position.to(means)[:, None, :] - means[None]
            facing = torch.where((normals * to_camera).sum(-1, keepdim=True) < 0, -1.0, 1.0)
            normals = normals * facing  # (B, N, 3), towards each camera
            colors = shade_views(modes, albedo[None], normals, means[None], cameras.light_position, self.cfg)
        return Splats(means, g.quats, g.scales(), g.opacities(), colors.contiguous())

    def render_views(self, cameras: CameraBatch, modes: list[str]) -> tuple[Render, RasterOutput]:
        """One image per camera with the given shading modes (differentiably)."""
        out = self.rasterizer(self.splats(cameras, modes), cameras)
        b, h, w = cameras.batch_size, cameras.height, cameras.width
        bg = ray_background(self.background, camera_rays(cameras)).view(b, h, w, 3)
        color = composite(out.color, out.alpha, bg)
        image = color.permute(0, 3, 1, 2).clamp(0.0, 1.0)
        alpha = out.alpha.permute(0, 3, 1, 2).clamp(0.0, 1.0)
        render = Render(image=image, space="rgb", opacity=alpha, shading=list(modes), aux={"log": {}})
        return render, out

    def render_chunked(self, cameras: CameraBatch, mode: str, chunk: int = 4) -> tuple[Tensor, Tensor]:
        """Images (B, 3, H, W) and opacities (B, 1, H, W) without gradients, a few cameras at a time."""
        return render_chunked(lambda part, modes: self.render_views(part, modes)[0], cameras, mode, chunk)

    # --- the Generator protocol ---------------------------------------------------------------

    def render(self, cameras: CameraBatch, step: int) -> Render:
        modes: list[str] = [choose_shading(step, self.shading_cfg) for _ in range(cameras.batch_size)]
        render, out = self.render_views(cameras, modes)
        if torch.is_grad_enabled() and out.means2d.requires_grad:
            out.means2d.retain_grad()  # densification reads the view-space gradient after backward
            self._last = (out, cameras.width, cameras.height)
        render.aux["log"]["gaussians"] = float(self.gaussians.count)
        return render

    def regularizers(self, render: Render, cameras: CameraBatch, step: int) -> dict[str, Tensor]:
        return {}

    def param_groups(self) -> list[dict[str, Any]]:
        g, cfg = self.gaussians, self.cfg
        groups: list[dict[str, Any]] = [
            {"params": [g.means], "lr": self.learning_rate("means", 0), "name": "means"},
            {"params": [g.color_logits], "lr": cfg.color_lr, "name": "colors"},
            {"params": [g.opacity_logits], "lr": cfg.opacity_lr, "name": "opacities"},
            {"params": [g.log_scales], "lr": cfg.scaling_lr, "name": "scales"},
            {"params": [g.quats], "lr": cfg.rotation_lr, "name": "quats"},
        ]  # fmt: skip
        background = [p for p in self.background.parameters() if p.requires_grad]
        if background:
            groups.append({"params": background})
        return groups

    def learning_rate(self, group: str, step: int) -> float | None:
        """The means' rate at step `step` (0-based; `ScheduledLearningRates`): DreamGaussian's
        step i (from 1) moves them at get_expon_lr_func(i); the other groups keep their own."""
        cfg = self.cfg
        if group != "means":
            return None
        return exponential_lr(step + 1, cfg.position_lr, cfg.position_lr_final, cfg.position_lr_steps)

    def after_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """After optimiser step `step` (0-based): densification statistics, densify / prune and
        opacity reset on the configured schedule."""
        cfg, g = self.cfg, self.gaussians
        iteration = step + 1  # DreamGaussian counts its steps from 1
        last, self._last = self._last, None
        if not cfg.densify_from <= iteration <= cfg.densify_until:
            return
        if last is not None and last[0].means2d.grad is not None and last[0].means2d.shape[1] == g.count:
            out, width, height = last
            assert out.means2d.grad is not None
            g.add_statistics(out.means2d.grad, out.radii, width, height)
        if cfg.densify_every > 0 and iteration % cfg.densify_every == 0:
            g.densify_and_prune(optimizer)
        if cfg.opacity_reset_every > 0 and iteration % cfg.opacity_reset_every == 0:
            g.reset_opacity(optimizer)

    def preview(self, cameras: CameraBatch, step: int, shading: str | None = None) -> Tensor:
        image, _ = self.render_chunked(cameras, shading or "albedo")
        return image

    # --- geometry and export --------------------------------------------------------------------

    def density_field(self) -> tuple[Any, Any, float]:
        """(density, albedo, level): sum_i o_i exp(-d_i^T Sigma_i^-1 d_i / 2) at world points, the
        density-weighted colour, and DreamGaussian's surface level (`density_threshold`)."""
        field = GaussianField.of(self.gaussians)
        return field.density, field.albedo, self.cfg.density_threshold

    def export(self, out_dir: Any, context: ExportContext) -> list[Any]:
        """gaussians.ply, then `sds_3d.final`'s mesh (marching cubes of `density_field()` over
        [-mesh_bound, mesh_bound]^3), turntable and viewer."""
        cfg = self.cfg
        return write_final(
            self, Path(out_dir), context, bound=cfg.mesh_bound, resolution=cfg.mesh_resolution,
            extra=lambda out: write_ply(out, self.gaussians),
        )  # fmt: skip
