"""Options of the `gaussians` generator and its presets (no torch: read by `sds plugins`).

3D Gaussian splatting (Kerbl et al. 2023) optimised by SDS as DreamGaussian does (Tang et al.
2024, §3.1, whose stage-1 settings are `configs/text.yaml` of its repository: 5,000 points in a
sphere of radius 0.5, SH degree 0, 500 steps, the learning rates and densification schedule
below). Shading and light sampling are DreamFusion's (Poole et al. 2023, §3.1, A.2), shared with
the other 3D generators through `sds_core.shading`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sds_core.api import BackgroundOptions, ExportOptions, ShadingOptions


@dataclass
class GaussianConfig(ExportOptions, BackgroundOptions, ShadingOptions):
    """Gaussians: initialisation, rasteriser, learning rates, densification and export; shading,
    background and the files of final/ as every 3D generator (`sds_core.options_3d`)."""

    # --- initialisation ------------------------------------------------------------------------
    # "sphere": num_points uniform in a ball of init_radius (DreamGaussian); or a run folder (its
    # final/mesh.ply, else mesh.glb: a NeRF or mesh run) or a mesh file, whose surface is sampled
    init: str = "sphere"
    num_points: int = 5000  # DreamGaussian text.yaml num_pts
    init_radius: float = 0.5  # DreamGaussian: points uniform in a ball of radius 0.5
    init_opacity: float = 0.1  # 3DGS / DreamGaussian: opacities start at sigmoid^-1(0.1)
    init_color: tuple[float, float, float] = (0.5, 0.5, 0.5)  # DreamGaussian: random SH ~ 0, i.e. grey
    # initial scales: the mean distance to the 3 nearest points (3DGS's distCUDA2), times this
    init_scale: float = 1.0

    # --- rasterisation -------------------------------------------------------------------------
    # "auto": gsplat on CUDA when installed (and `packaging` with it), else the PyTorch rasteriser
    rasterizer: Literal["auto", "torch", "gsplat"] = "auto"
    eps2d: float = 0.3  # gsplat: px^2 added to each 2D covariance (low-pass filter)
    max_pairs: int = 1_000_000  # (pixel, Gaussian) pairs per band of rows (the CPU rasteriser's memory bound)

    # --- learning rates (DreamGaussian text.yaml; Adam, eps 1e-15 as optim.eps) -------------------
    position_lr: float = 1e-3  # position_lr_init
    position_lr_final: float = 2e-5  # position_lr_final: exponential decay (get_expon_lr_func) ...
    position_lr_steps: int = 300  # ... over position_lr_max_steps, constant afterwards
    color_lr: float = 0.01  # feature_lr (the SH DC term; here the sigmoid logits of the colour)
    opacity_lr: float = 0.05  # opacity_lr
    scaling_lr: float = 0.005  # scaling_lr (log scales)
    rotation_lr: float = 0.005  # rotation_lr (quaternions)

    # --- densification and pruning (3DGS §5, DreamGaussian's schedule) -----------------------------
    densify_from: int = 0  # density_start_iter
    densify_until: int = 3000  # density_end_iter
    densify_every: int = 50  # densification_interval
    opacity_reset_every: int = 700  # opacity_reset_interval (opacities clamped to reset_opacity)
    reset_opacity: float = 0.01  # 3DGS reset_opacity: min(opacity, 0.01)
    # mean norm of the view-space gradient of a Gaussian's 2D mean (in NDC: gsplat's DefaultStrategy
    # scales pixel gradients by W/2, H/2 and the camera count) above which it is cloned or split
    grad_threshold: float = 0.01  # densify_grad_threshold
    percent_dense: float = 0.01  # clone when the largest scale <= percent_dense x extent, else split
    extent: float = 4.0  # DreamGaussian main.py: densify_and_prune(..., extent=4)
    split_into: int = 2  # 3DGS: a split Gaussian becomes 2, scales / (0.8 x 2)
    min_opacity: float = 0.01  # DreamGaussian: prune opacities below 0.01
    max_gaussians: int = 0  # no densification beyond this count (0: no cap; a CPU budget)

    # --- export --------------------------------------------------------------------------------
    mesh_resolution: int = 128  # DreamGaussian extract_mesh: density grid of 128^3
    density_threshold: float = 1.0  # DreamGaussian density_thresh: the surface level of sum o exp(-d^2/2)
    mesh_bound: float = 0.6  # the grid spans [-mesh_bound, mesh_bound]^3 (the shapes world fits in 0.45)


GAUSSIAN_PRESETS: dict[str, dict[str, Any]] = {
    # the learning rates are per parameter (above); optim.lr is unused by this generator
    "default": {"optim": {"schedule": "constant", "eps": 1e-15}},
    # DreamGaussian stage 1 (configs/text.yaml): 500 steps; its renders are 512 px for SD, sds's
    # cameras keep DreamFusion's 64 px (A.2): --set cameras.width=512 for a latent prior on a GPU.
    # DreamGaussian renders colour only: the shared albedo_only_steps (1,000) outlasts the run.
    "paper": {
        "run": {"steps": 500, "preview_every": 100, "checkpoint_every": 100},
        "cameras": {"width": 64, "height": 64},
    },
    # What a 2-core CPU runs in a few minutes: 1,000 points in a ball of 0.4 (the shapes world fits
    # in 0.45), at most 6,000 Gaussians, 48 x 48 renders, shading from step 100, 600 steps.
    # Measured (benchmarks/gaussians_shapes.py, seeds 0 / 1, on 2 shared cores): IoU cube 0.839 /
    # 0.785, sphere 0.897 / 0.891, about 2 minutes (80 s of CPU) per run
    "draft": {
        "generator": {
            "num_points": 1000,
            "init_radius": 0.4,
            "albedo_only_steps": 100,
            "max_gaussians": 6000,
            "texture_size": 256,
            "video_frames": 24,
            "video_resolution": 64,
            "mesh_resolution": 96,
        },
        "run": {"steps": 600, "preview_every": 200, "checkpoint_every": 200},
        "cameras": {"width": 48, "height": 48},
    },
}

# options the generator no longer has -> what to do instead (one deprecation line each, then dropped)
GAUSSIAN_RETIRED: dict[str, str] = {
    "position_lr_delay_mult": "DreamGaussian sets no delay steps, so 3DGS's delayed start never applied; remove it",
}
