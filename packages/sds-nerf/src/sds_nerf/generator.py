"""The `nerf` generator: DreamFusion's NeRF behind the sds Generator protocol (§3.1, A.2).

The field is sampled along each pixel's ray (`sds_3d.rays`), shaded per sample with its view's
mode (`sds_3d.shading`), volume-rendered with nerfacc's functions and composited over the
background (`sds_3d.background`). final/ is `sds_3d.final`'s, from `density_field()`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sds_3d.background import build_background, ray_background
from sds_3d.final import write_final
from sds_3d.rays import RayBundle, camera_rays
from sds_3d.shading import is_shaded, shade_views
from sds_core.api import (
    BuildContext,
    CameraBatch,
    ConfigError,
    ExportContext,
    Render,
    ShadingConfig,
    choose_shading,
    compile_enabled,
    composite,
)
from sds_nerf.config import NerfConfig
from sds_nerf.field import NerfField, VoxelGridField
from sds_nerf.regularizers import annealed_weight, entropy_loss, opacity_loss, orientation_loss, reduce_rays
from sds_nerf.sampling import NerfaccSampler, OccupancyGrid, Samples, TorchSampler, density_threshold


@dataclass
class RaySamples:
    """What the NeRF's regularisers read of a render: the samples along its rays."""

    weights: Tensor  # (M,) the rendering weight of each sample
    ray_indices: Tensor  # (M,) the ray of each sample
    dirs: Tensor  # (M, 3) its ray's direction
    n_rays: int
    normals: Tensor | None = None  # (M, 3), when shading or the orientation loss needed them


@dataclass
class NerfRender(Render):
    """A NeRF render: a `Render` with its ray samples, for the orientation loss (Ref-NeRF, A.2)."""

    samples: RaySamples | None = None


class NerfGenerator(nn.Module):
    """Field + background + sampler; renders shaded images for SDS and exports meshes and videos."""

    view_dependent = True

    def __init__(self, config: NerfConfig, context: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg = config
        device = torch.device(context.device)
        self.total_steps = context.total_steps
        self.field: NerfField | VoxelGridField = (
            VoxelGridField(cfg, device) if cfg.field == "voxel" else NerfField(cfg, device)
        )
        if isinstance(self.field, NerfField) and compile_enabled(cfg.compile, device):
            self.field.compile_features()
        self.background = build_background(cfg, context.guidance_facts())
        self.shading_cfg: ShadingConfig = cfg  # a 3D generator's config holds the shading options
        self.step_size = cfg.render_step_size or 2 * cfg.radius / cfg.samples_per_ray
        threshold = density_threshold(cfg.occupancy_threshold, self.step_size)
        self.grid = OccupancyGrid(cfg.radius, cfg.occupancy_resolution, threshold, cfg.occupancy_decay)
        self.torch_sampler = TorchSampler(cfg.radius, cfg.samples_per_ray)
        self.nerfacc: NerfaccSampler | None = None
        self._nerfacc_stale = False  # set when a checkpoint without nerfacc's grid is loaded
        if device.type == "cuda" and cfg.sampler in ("auto", "nerfacc"):
            self.nerfacc = self._try_nerfacc(device)
        elif cfg.sampler == "nerfacc":
            raise ConfigError("generator.sampler=nerfacc needs a CUDA device; use sampler=torch (or auto) on CPU")
        self.last_stats: dict[str, float] = {}

    def surface_level(self) -> float:
        """The density level tau of the surface, for mesh export and occupancy (IoU).

        mesh_threshold when set; else the tau at which one render step reaches opacity mesh_alpha.
        """
        if self.cfg.mesh_threshold is not None:
            return float(self.cfg.mesh_threshold)
        return density_threshold(self.cfg.mesh_alpha, self.step_size)

    def density_field(self) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor], float]:
        """World-space density and albedo callables on (N, 3) points and the surface level that
        export uses, for geometry evaluation (`sds eval geometry`). Points may live on any device
        (evaluation makes them on the CPU); they are moved to the field's."""
        device = next(self.field.parameters()).device

        def density(points: Tensor) -> Tensor:
            return self.field.density(points.to(device))

        def albedo(points: Tensor) -> Tensor:
            return self.field(points.to(device))[1]

        return density, albedo, self.surface_level()

    def _try_nerfacc(self, device: torch.device) -> NerfaccSampler | None:
        cfg = self.cfg
        try:
            sampler = NerfaccSampler(cfg.radius, cfg.occupancy_resolution, self.step_size, device)
            # load (or JIT-build) the CUDA kernels now, on a CUDA tensor, so a failure falls back early
            o = torch.tensor([[0.0, 0.0, 3.0]], device=device)
            d = torch.tensor([[0.0, 0.0, -1.0]], device=device)
            sampler(o, d, None, stratified=False)
        except Exception as exc:  # any failure to load the kernels means "use PyTorch"
            if cfg.sampler == "nerfacc":
                raise RuntimeError(f"nerfacc's CUDA sampler is unavailable: {exc}") from exc
            warnings.warn(f"nerfacc's CUDA sampler is unavailable ({exc}); using the PyTorch sampler", stacklevel=2)
            return None
        return sampler

    # --- sampling and volume rendering --------------------------------------------------------

    def _update_occupancy(self, step: int) -> None:
        cfg = self.cfg
        if not (self.training and cfg.empty_space_skipping):
            return
        if self.nerfacc is not None:
            self.nerfacc.update(
                step, self.field.density, cfg.occupancy_threshold, cfg.occupancy_update_every,
                cfg.occupancy_warmup, cfg.occupancy_decay,
            )  # fmt: skip
        elif step >= cfg.occupancy_warmup and step % max(cfg.occupancy_update_every, 1) == 0:
            self.grid.update(self.field.density)

    @torch.no_grad()
    def refresh_occupancy(self) -> None:
        """Rebuild the occupancy grid (PyTorch's or nerfacc's) from the current field (before export renders)."""
        if not self.cfg.empty_space_skipping:
            return
        if self.nerfacc is not None:
            self.nerfacc.rebuild(self.field.density, self.cfg.occupancy_threshold)
        else:
            self.grid.update(self.field.density, jitter=False)

    def get_extra_state(self) -> dict[str, Any]:
        """nerfacc's occupancy grid (CUDA runs) goes into checkpoints here: the estimator is not a
        submodule, so that CPU and CUDA generators have the same parameters and buffers."""
        if self.nerfacc is None:
            return {}
        return {"nerfacc_estimator": {k: v.detach().cpu() for k, v in self.nerfacc.estimator.state_dict().items()}}

    def set_extra_state(self, state: Any) -> None:
        saved = state.get("nerfacc_estimator") if isinstance(state, dict) else None
        if self.nerfacc is None:
            return  # a CUDA run loaded on the CPU: the PyTorch grid is in the buffers already
        if saved is not None:
            self.nerfacc.estimator.load_state_dict(saved)
        else:  # a CPU checkpoint on CUDA: nerfacc's grid from the loaded field
            self._nerfacc_stale = True

    def sample(self, rays: RayBundle, skipping: bool | None = None) -> Samples:
        """Samples for these rays; `skipping` None follows the config (and the grid's warm-up)."""
        skip = self.cfg.empty_space_skipping if skipping is None else skipping
        stratified = self.training
        if self.nerfacc is not None and rays.origins.is_cuda:
            if self._nerfacc_stale:
                self.nerfacc.rebuild(self.field.density, self.cfg.occupancy_threshold)
                self._nerfacc_stale = False
            return self.nerfacc(rays.origins, rays.dirs, self.field.density if skip else None, stratified)
        return self.torch_sampler(rays.origins, rays.dirs, self.grid if skip else None, stratified)

    def render_rays(
        self,
        rays: RayBundle,
        modes: list[str],
        light_position: Tensor | None,
        skipping: bool | None = None,
        create_graph: bool = True,
    ) -> dict[str, Tensor]:
        """Volume-render rays with one shading mode per camera; returns colour, opacity and
        the per-sample weights, normals and directions the regularisers need."""
        import nerfacc  # CPU-safe functions only here: batched or packed rendering weights, sums

        samples = self.sample(rays, skipping)
        if samples.packed:
            assert samples.ray_indices is not None
            ray_idx = samples.ray_indices
            t_mid = samples.t_points
        else:
            assert samples.mask is not None
            ray_idx, sample_idx = samples.mask.nonzero(as_tuple=True)
            t_mid = samples.t_points[ray_idx, sample_idx]
        dirs = rays.dirs[ray_idx]
        points = rays.origins[ray_idx] + dirs * t_mid[:, None]
        cam = rays.camera[ray_idx]
        need_normals = is_shaded(modes) or self._orientation_weight_active()
        normals: Tensor | None = None
        if points.shape[0] == 0:
            tau = points.new_zeros(0)
            albedo = points.new_zeros(0, 3)
            normals = points.new_zeros(0, 3) if need_normals else None
        elif need_normals:
            tau, albedo, normals = self.field.with_normals(points, create_graph=create_graph)
        else:
            tau, albedo = self.field(points)
        rgb = albedo
        if normals is not None and light_position is not None:
            rgb = shade_views(modes, albedo, normals, points, light_position, self.cfg, view=cam)
        n_rays = samples.n_rays
        if samples.packed:
            weights, _, _ = nerfacc.render_weight_from_density(
                samples.t_starts, samples.t_ends, tau, ray_indices=ray_idx, n_rays=n_rays
            )
            color = nerfacc.accumulate_along_rays(weights, rgb, ray_indices=ray_idx, n_rays=n_rays)
            opacity = nerfacc.accumulate_along_rays(weights, None, ray_indices=ray_idx, n_rays=n_rays)
            sample_weights = weights
        else:
            assert samples.mask is not None
            mask = samples.mask
            tau_dense = tau.new_zeros(mask.shape).index_put((ray_idx, sample_idx), tau)
            rgb_dense = rgb.new_zeros(*mask.shape, 3).index_put((ray_idx, sample_idx), rgb)
            weights, _, _ = nerfacc.render_weight_from_density(samples.t_starts, samples.t_ends, tau_dense)
            color = nerfacc.accumulate_along_rays(weights, rgb_dense)
            opacity = nerfacc.accumulate_along_rays(weights, None)
            sample_weights = weights[ray_idx, sample_idx]
        out = {
            "color": composite(color, opacity, ray_background(self.background, rays)),
            "opacity": opacity,
            "weights": sample_weights,
            "ray_indices": ray_idx,
            "dirs": dirs,
            "samples_evaluated": torch.tensor(float(points.shape[0])),
        }
        if normals is not None:
            out["normals"] = normals
        return out

    def _orientation_weight_active(self) -> bool:
        cfg = self.cfg
        return (
            self.training
            and cfg.orientation_on_albedo
            and max(cfg.orientation_weight_start, cfg.orientation_weight_end) > 0
        )

    # --- the Generator protocol ---------------------------------------------------------------

    def render(self, cameras: CameraBatch, step: int) -> Render:
        self.field.set_step(step)
        self._update_occupancy(step)
        modes: list[str] = [choose_shading(step, self.shading_cfg) for _ in range(cameras.batch_size)]
        return self.render_views(cameras, modes)

    def reset_occupancy(self) -> None:
        """Mark every cell occupied (PyTorch's grid and nerfacc's) until the next update."""
        if self.nerfacc is not None:
            self.nerfacc.estimator.binaries.fill_(True)
        self.grid.binary.copy_(self.grid.inside)

    def render_views(self, cameras: CameraBatch, modes: list[str], skipping: bool | None = None) -> Render:
        """Render one image per camera with the given shading modes (differentiably).

        A training render in which the occupancy grid left no sample (the field emptied where
        these rays pass) would carry no gradient to the field, which could then never regrow
        there: the grid is reset to all occupied and the views are rendered again.
        """
        rays = camera_rays(cameras)
        out = self.render_rays(rays, modes, cameras.light_position, skipping)
        evaluated = float(out["samples_evaluated"])
        reset = self.training and skipping is not False and evaluated == 0
        if reset:
            self.reset_occupancy()
            out = self.render_rays(rays, modes, cameras.light_position, skipping)
            evaluated = float(out["samples_evaluated"])
        b, h, w = cameras.batch_size, cameras.height, cameras.width
        image = out["color"].view(b, h, w, 3).permute(0, 3, 1, 2)
        opacity = out["opacity"].view(b, h, w, 1).permute(0, 3, 1, 2)
        self.last_stats = {"samples_per_ray": evaluated / max(rays.origins.shape[0], 1)}
        if self.nerfacc is None:
            self.last_stats["occupied_fraction"] = self.grid.occupied_fraction()
        if reset:
            self.last_stats["occupancy_reset"] = 1.0
        samples = RaySamples(out["weights"], out["ray_indices"], out["dirs"], rays.origins.shape[0], out.get("normals"))
        return NerfRender(
            image=image.clamp(0.0, 1.0),
            space="rgb",
            opacity=opacity,
            shading=list(modes),
            aux={"log": dict(self.last_stats)},  # the loop writes these into metrics.jsonl
            samples=samples,
        )

    @torch.no_grad()
    def render_chunked(self, cameras: CameraBatch, mode: str, chunk: int | None = None) -> tuple[Tensor, Tensor]:
        """Images (B, 3, H, W) and opacities (B, 1, H, W) without gradients, in chunks of rays."""
        chunk = chunk or self.cfg.render_chunk
        rays = camera_rays(cameras)
        modes = [mode] * cameras.batch_size
        colors, opacities = [], []
        for start in range(0, rays.origins.shape[0], chunk):
            out = self.render_rays(rays[start : start + chunk], modes, cameras.light_position, create_graph=False)
            colors.append(out["color"])
            opacities.append(out["opacity"])
        b, h, w = cameras.batch_size, cameras.height, cameras.width
        image = torch.cat(colors).view(b, h, w, 3).permute(0, 3, 1, 2).clamp(0, 1)
        return image, torch.cat(opacities).view(b, h, w, 1).permute(0, 3, 1, 2)

    def regularizers(self, render: Render, cameras: CameraBatch, step: int) -> dict[str, Tensor]:
        cfg = self.cfg
        samples = render.samples if isinstance(render, NerfRender) else None
        batch = render.image.shape[0]
        terms: dict[str, Tensor] = {}
        if samples is not None and samples.normals is not None:
            weight = annealed_weight(
                step, cfg.orientation_weight_start, cfg.orientation_weight_end, cfg.orientation_anneal_steps
            )
            if weight > 0:
                loss = orientation_loss(
                    samples.weights, samples.normals, samples.dirs, samples.ray_indices, samples.n_rays
                )
                terms["orientation"] = weight * reduce_rays(loss, batch, cfg.regularizer_reduction)
        if cfg.opacity_weight > 0 and render.opacity is not None:
            loss = opacity_loss(render.opacity, cfg.opacity_epsilon)
            terms["opacity"] = cfg.opacity_weight * reduce_rays(loss, batch, cfg.regularizer_reduction)
        if cfg.entropy_weight > 0 and render.opacity is not None:
            loss = entropy_loss(render.opacity)
            terms["entropy"] = cfg.entropy_weight * reduce_rays(loss, batch, cfg.regularizer_reduction)
        if cfg.grid_tv_weight > 0 and isinstance(self.field, VoxelGridField):
            terms["tv"] = cfg.grid_tv_weight * self.field.total_variation()
        return terms

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def preview(self, cameras: CameraBatch, step: int, shading: str | None = None) -> Tensor:
        image, _ = self.render_chunked(cameras, shading or "albedo")
        return image

    def export(self, out_dir: Any, context: ExportContext) -> list[Any]:
        """final/ through `sds_3d.final`: the isosurface of `density_field()` over the scene sphere's
        cube, its albedo, turntable and viewer; the occupancy grid is rebuilt before the renders."""
        cfg = self.cfg
        return write_final(
            self, Path(out_dir), context, bound=cfg.radius, resolution=cfg.mesh_resolution,
            before_render=self.refresh_occupancy,
        )  # fmt: skip
