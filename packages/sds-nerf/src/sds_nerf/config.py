"""Options of the `nerf` generator and its presets (no torch: read by `sds plugins`).

Defaults follow DreamFusion (Poole et al. 2023, §3.1 and Appendix A.2); each constant cites where
it comes from. Deviations are marked "deviation" with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sds_core.api import PAPER_CPU_STEPS, BackgroundOptions, ExportOptions, ShadingOptions


@dataclass
class NerfConfig(ExportOptions, BackgroundOptions, ShadingOptions):
    """The DreamFusion NeRF: field, sampling, regularisers, surface export; shading, background
    and the files of final/ as every 3D generator (`sds_core.options_3d`)."""

    # --- the field (§3.1, A.2) -----------------------------------------------------------------
    # "mlp": the paper's MLP on an encoding; "voxel" (deviation, draft): a dense grid of raw density
    # and albedo logits, trilinear, with the same activations and blob (converges fast on a CPU)
    field: Literal["mlp", "voxel"] = "mlp"
    grid_resolution: int = 64  # "voxel": nodes per side
    grid_bound: float | None = None  # "voxel": the grid spans [-bound, bound]^3; None: the radius
    grid_tv_weight: float = 0.0  # "voxel": total variation of the raw density grid (DVGO)
    # "ipe": mip-NeRF integrated positional encoding (the paper); "frequency": plain positional
    # encoding; "hashgrid": Instant-NGP multiresolution hash grid (faster; not the paper's field)
    encoding: Literal["ipe", "frequency", "hashgrid"] = "ipe"
    frequencies: int = 8  # A.2: positional encoding 2^0 ... 2^7
    ipe_variance_start: float = 5e-2  # A.2: Sigma annealed from 5e-2 ...
    ipe_variance_end: float = 2e-3  # A.2: ... to 2e-3 ...
    ipe_anneal_steps: int = 5000  # A.2: ... linearly over the first 5k steps
    hash_levels: int = 16  # Instant-NGP defaults (Müller et al. 2022): L = 16, F = 2, T = 2^19
    hash_features: int = 2
    hash_log2_size: int = 19
    hash_base_resolution: int = 16
    hash_max_resolution: int = 1024
    hash_backend: Literal["auto", "torch", "tcnn"] = "auto"  # "auto": tinycudann on CUDA when installed
    # torch.compile of the encoding and MLP (dynamic in the sample count; `sds_core.compiling`):
    # "auto" on CUDA, off on the CPU. Compiled graphs are differentiated once, so calls that take
    # the gradient with respect to the points (autograd normals) stay eager: it pays with
    # normals=finite_difference or with no normals
    compile: Literal["auto", "on", "off"] = "auto"
    # "inductor" generates fused kernels; "aot_eager_decomp_partition" runs the traced graphs eagerly
    compile_backend: Literal["inductor", "aot_eager_decomp_partition"] = "inductor"
    hidden: int = 128  # A.2: 128 channels
    blocks: int = 5  # A.2: 5 ResNet blocks (SiLU, LayerNorm)
    density_activation: Literal["exp", "softplus"] = "exp"  # A.2: exp
    # deviation: a constant shift of the pre-activation density so that the initial field is not
    # a fog filling the whole sphere (exp(0) = 1 per unit over 2.8 units is 94 % opaque)
    density_bias: float = -1.0
    # A.2: tau += lambda exp(-|mu|^2 / (2 sigma^2)), lambda 5, sigma 0.2 ("dreamfusion");
    # Magic3D's blob lambda (1 - |mu| / sigma), lambda 10, sigma 0.5 ("magic3d"). Added before
    # the activation, as the open ports do.
    blob: Literal["dreamfusion", "magic3d", "none"] = "dreamfusion"
    blob_scale: float | None = None  # None: 5 (dreamfusion) or 10 (magic3d)
    blob_std: float | None = None  # None: 0.2 (dreamfusion) or 0.5 (magic3d)
    radius: float = 1.4  # A.2: the scene is bounded by a sphere of radius 1.4
    # §3.1: n = -grad tau / |grad tau| by autograd; "finite_difference" is cheaper (6 density calls)
    normals: Literal["autograd", "finite_difference"] = "autograd"
    finite_difference_eps: float = 5e-3
    # floor of |grad tau| when normalising normals (density units per unit length; the surface
    # level is ~12-16 over a render step of ~0.05, so surface gradients are in the hundreds):
    # bounds the gradient of shading in flat, empty space (the paper gives none)
    normal_epsilon: float = 1e-2

    # --- sampling ------------------------------------------------------------------------------
    # "auto": nerfacc's OccGridEstimator on CUDA (when its kernels load), the PyTorch sampler else
    sampler: Literal["auto", "nerfacc", "torch"] = "auto"
    samples_per_ray: int = 64  # stratified candidates over the sphere chord (torch sampler)
    render_step_size: float | None = None  # nerfacc marching step; None: 2 * radius / samples_per_ray
    occupancy_resolution: int = 64  # cells per side of the occupancy grid over [-radius, radius]^3
    occupancy_update_every: int = 16  # steps between occupancy grid updates
    occupancy_warmup: int = 256  # steps before skipping starts (the field changes fast at first)
    occupancy_threshold: float = 0.01  # a cell is empty when its alpha over one step is below this
    occupancy_decay: float = 0.95  # EMA of the per-cell density (as nerfacc's estimator)
    empty_space_skipping: bool = True  # skip the cells the occupancy grid marks empty

    # --- regularisers (A.2) ------------------------------------------------------------------
    # How a per-ray regulariser is reduced (sds_nerf.regularizers.reduce_rays): "sum" over each
    # image's pixels, averaged over images, as the SDS loss is, so that the paper's weights weigh
    # a pixel's regulariser against that pixel's SDS gradient; "mean" over rays makes every
    # weight act pixels-times weaker (at 64 x 64 the paper's weights were inert: a parameter-
    # gradient ratio regulariser/SDS of about 1e-8)
    regularizer_reduction: Literal["sum", "mean"] = "sum"
    orientation_weight_start: float = 1e-4  # A.2: orientation loss weight annealed from 1e-4 ...
    orientation_weight_end: float = 1e-2  # A.2: ... to 1e-2 ...
    orientation_anneal_steps: int = 5000  # A.2: ... over 5k steps
    opacity_weight: float = 1e-3  # A.2: sqrt((sum w)^2 + 0.01), weight 1e-3 (up to 5e-3)
    opacity_epsilon: float = 0.01  # A.2: the 0.01 under the square root
    entropy_weight: float = 0.0  # option: binary entropy of the accumulated opacity
    # compute normals (and the orientation loss) on albedo renders too, as the paper does; False
    # computes them only for shaded renders (cheaper on CPU)
    orientation_on_albedo: bool = True

    # --- export ------------------------------------------------------------------------------
    mesh_resolution: int = 128  # marching-cubes grid per side (sds export --resolution)
    # The surface: the density level tau where one render step of length delta reaches opacity
    # mesh_alpha, tau = -ln(1 - alpha) / delta (the paper gives no level; a level in absolute
    # density units means a different surface for every sampling step). mesh_threshold, when set,
    # is an absolute tau instead (sds export --threshold). The benchmark's occupancy uses the same level.
    mesh_alpha: float = 0.5
    mesh_threshold: float | None = None
    render_chunk: int = 4096  # rays per chunk when rendering without gradients


NERF_PRESETS: dict[str, dict[str, Any]] = {
    # deviation: Adam at 1e-3 instead of Distributed Shampoo at 1e-4 (A.2); the warm-up and cosine
    # schedule of the paper stay in the `paper` preset.
    "default": {"optim": {"lr": 1e-3}},
    "paper": {
        "generator": {"encoding": "ipe", "hidden": 128, "blocks": 5, "samples_per_ray": 64},
        "optim": {"lr": 1e-3, "schedule": "warmup_cosine", "warmup_steps": 3000},
        "run": {"steps": 15000},
        "cameras": {"width": 64, "height": 64},
    },
    # The paper's components unchanged (the MLP with IPE, A.2's cameras, the shading schedule, the
    # orientation and opacity regularisers, the background handling, autograd normals), sized for
    # a 2-core CPU; every entry below is a size, with the paper's value (measured:
    # benchmarks/paper_cpu.py, sds-nerf README). The step counts of the schedules keep the
    # paper's fractions of the run (PAPER_CPU_STEPS).
    "paper-cpu": {
        "generator": {
            # samples: 32 stratified per ray (paper preset 64; A.2 uses mip-NeRF 360's proposal
            # sampler), an occupancy grid of 32^3 updated every 8 steps from the first (paper
            # preset 64^3 every 16 after 256)
            "samples_per_ray": 32,
            "occupancy_resolution": 32,
            "occupancy_update_every": 8,
            "occupancy_warmup": 0,
            # the initial density shift (a deviation in both presets; A.2 has none): at -1 the
            # fresh MLP is a fog the occupancy grid cannot skip (48 samples a ray, 20 s a step on
            # a shared core); at -3 it skips all but the blob from the first update
            "density_bias": -3.0,
            # schedules in steps, at the paper's fraction of the run (A.2: 1k albedo-only, 5k
            # for the IPE and orientation anneals, of 15k)
            "albedo_only_steps": PAPER_CPU_STEPS // 15,
            "ipe_anneal_steps": PAPER_CPU_STEPS // 3,
            "orientation_anneal_steps": PAPER_CPU_STEPS // 3,
            # export sizes (the paper's are the defaults): marching cubes 96^3 (128^3), a
            # 512 px texture (1024), 24 turntable frames of 64 px (60 of 128)
            "mesh_resolution": 96,
            "texture_size": 512,
            "video_frames": 24,
            "video_resolution": 64,
        },
        # Adam at 1e-3 (the `paper` preset's; A.2: Shampoo at 1e-4); the core's paper-cpu preset
        # sets the length (sds_core.config.PAPER_CPU_STEPS; A.2: 15,000), the warm-up at the
        # paper's fraction and the side of the renders (PAPER_CPU_SIDE; A.2: 64 x 64)
        "optim": {"lr": 1e-3},
    },
    # What a 2-core CPU finishes in minutes (measured in benchmarks/nerf_shapes.py; README). Each
    # deviation from the paper is one of the options above:
    # - field "voxel": a 48^3 grid of raw density and albedo over the sphere's cube, Adam at 5e-2
    #   (the MLP stays a semi-transparent fog after 400 steps: IoU <= 0.03 at the export level);
    # - entropy of the accumulated opacity at 1e3 / 1024 (summed over pixels as SDS is; it was
    #   measured as a weight on the mean over the 32 x 32 pixels): it turns the fog into an
    #   opaque object. With the camera-exact `shapes` prior and A.2's cameras the thin torus
    #   fills in at 1.5e3 / 1024 (IoU 0.45, against 0.66 at 1e3 / 1024; seed 0);
    # - finite-difference normals (half a cell), none on albedo renders; albedo only for 100 steps.
    # The cameras are A.2's (the fixed framing the draft used with the fixed-reference prior is
    # sds_shapes.config.FIXED_FRAMING_CAMERAS, a --config away).
    "draft": {
        "generator": {
            "field": "voxel",
            "grid_resolution": 48,
            "normals": "finite_difference",
            "finite_difference_eps": 0.03,
            "entropy_weight": 1000.0 / 1024,
            # a nearly empty start: the occupancy grid skips all but the blob from the first update
            "density_bias": -3.0,
            "samples_per_ray": 48,
            "orientation_on_albedo": False,
            "occupancy_resolution": 32,
            "occupancy_update_every": 8,
            "occupancy_warmup": 32,
            "albedo_only_steps": 100,
            "orientation_anneal_steps": 300,
            "ipe_anneal_steps": 300,
            "mesh_resolution": 96,
            "texture_size": 512,
            "video_frames": 24,
            "video_resolution": 64,
        },
        "optim": {"lr": 5e-2, "schedule": "constant"},
        "run": {"steps": 1500, "preview_every": 250, "checkpoint_every": 250},
        "cameras": {"width": 32, "height": 32},
    },
}
