"""Options of the `mesh` generator and its presets (no torch: read by `sds plugins`).

The mesh is a template (an icosphere) or a NeRF run's exported mesh (Magic3D's second stage, Lin et
al. 2023, §4.2) plus learned per-vertex offsets and colours. Shading and light sampling are
DreamFusion's (Poole et al. 2023, §3.1, A.2), shared with the NeRF through `sds_core.shading`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sds_core.api import BackgroundOptions, ExportOptions, ShadingOptions


@dataclass
class MeshConfig(ExportOptions, BackgroundOptions, ShadingOptions):
    """An explicit triangle mesh: template or NeRF mesh, offsets, vertex colours, rasteriser;
    shading, background and the files of final/ as every 3D generator (`sds_core.options_3d`)."""

    # --- the mesh ------------------------------------------------------------------------------
    # "icosphere", or a NeRF run folder (reads RUN_DIR/final/mesh.ply, else mesh.glb: Magic3D's
    # coarse-to-fine second stage), or a mesh file (.ply, .glb, .obj) in the run's y-up convention
    init: str = "icosphere"
    subdivisions: int = 4  # icosphere subdivisions: 4 gives 2,562 vertices and 5,120 faces
    radius: float = 0.4  # icosphere radius (the shapes world fits in a sphere of 0.45)
    init_color: tuple[float, float, float] = (0.5, 0.5, 0.5)  # template albedo (a NeRF mesh keeps its own)
    # Large Steps (Nicolet et al. 2021): optimise u with offsets = (I + lambda L)^-1 u, L the
    # uniform Laplacian; 0 optimises the offsets directly. Their meshes use lambda 10 to 100.
    smoothness: float = 20.0
    # colours are sigmoid(logits); the colour logits learn faster than positions (optim.lr x this)
    color_lr_scale: float = 30.0
    # a second stage starts from a surface that is already close: its vertices move at optim.lr x
    # this (the colours keep color_lr_scale). Measured on the shapes prior (draft, 48 px, 400
    # steps, benchmarks/mesh_shapes.py): refining a NeRF sphere at 1e-3 lost IoU (0.845 -> 0.826),
    # at 3e-4 kept it (0.845); the draft's 3e-3 x 0.1 gives 3e-4.
    refine_lr_scale: float = 0.1

    # --- rasterisation -------------------------------------------------------------------------
    # "auto": nvdiffrast on CUDA when it is installed, else the PyTorch soft rasteriser
    rasterizer: Literal["auto", "soft", "nvdiffrast"] = "auto"
    # SoftRas (Liu et al. 2019, eq. 1): coverage D = sigmoid(delta d^2 / sigma), d the distance
    # to the triangle in pixels. SoftRas's sigma 1e-4 in NDC is about 0.1 px^2 at 64 px; a wider
    # edge lets silhouettes pull vertices from further away.
    sigma: float = 0.5  # px^2
    # the soft rasteriser's opacity: "silhouette" = sigmoid(+-d^2 / sigma) with d the distance to
    # the projected silhouette (unbiased whatever the tessellation); "sum" = min(1, sum of every
    # face's D), closer to SoftRas eq. 2 but it inflates outlines by about a pixel on fine meshes
    # (silhouette area x1.12 at 1,280 faces, x1.17 at 20k), which SDS answers by shrinking the mesh
    coverage: Literal["silhouette", "sum"] = "silhouette"
    # SoftRas eq. 3: aggregation weights D exp(z / gamma), z the normalised inverse depth
    gamma: float = 1e-3
    near: float = 0.05  # depth range of the normalised inverse depth (world units)
    far: float = 4.0  # (world units)
    cull_backfaces: bool = True  # closed meshes: back faces never show, skipping them halves the work
    tile_size: int = 8  # pixels per tile side; faces are culled per tile by their bounding boxes
    max_pairs: int = 2_000_000  # pixel x face pairs per chunk (bounds the rasteriser's memory)

    # --- regularisers (weights of mean terms) ------------------------------------------------
    laplacian_weight: float = 1.0  # uniform Laplacian of the vertex positions, squared
    normal_weight: float = 0.1  # 1 - cos between the normals of faces sharing an edge
    edge_weight: float = 1.0  # ((|e| - l0) / l0)^2 with l0 the initial mean edge length


MESH_PRESETS: dict[str, dict[str, Any]] = {
    # Adam on vertex offsets (world units per step) and colour logits; DreamFusion's Shampoo
    # schedule (A.2) is for network weights, not for explicit vertices.
    # measured on the shapes cube (benchmarks/mesh_shapes.py): 3e-3 and above drift away from the truth
    "default": {"optim": {"lr": 1e-3, "schedule": "constant"}},
    # 64 x 64 renders as DreamFusion's guidance (A.2); Magic3D's fine stage renders 512 px with
    # nvdiffrast and a latent prior, which `--set cameras.width=512` asks for on a GPU.
    "paper": {
        "generator": {"subdivisions": 5},
        "optim": {"lr": 1e-3, "schedule": "warmup_cosine", "warmup_steps": 500},
        "run": {"steps": 5000},
        "cameras": {"width": 64, "height": 64},
    },
    # What a 2-core CPU finishes in about a minute: 642 vertices, 48 x 48 renders, 800 steps.
    "draft": {
        "generator": {
            "subdivisions": 3,
            "albedo_only_steps": 100,
            "texture_size": 256,
            "video_frames": 24,
            "video_resolution": 64,
        },
        # measured on the shapes cube with the cameras below: lr 1e-3 / 400 steps IoU 0.64,
        # 3e-3 / 800 steps IoU 0.72 (a NeRF mesh refines at 3e-3 x refine_lr_scale = 3e-4)
        "optim": {"lr": 3e-3, "schedule": "constant"},
        "run": {"steps": 800, "preview_every": 200, "checkpoint_every": 200},
        # A.2's cameras: the camera-exact `shapes` prior serves every framing. Measured with
        # benchmarks/mesh_shapes.py (800 steps, seed 0): cube IoU 0.717, sphere 0.933 (with the
        # fixed references, fixed framing, sds_shapes.config.FIXED_FRAMING_CAMERAS, was needed:
        # cube 0.64 against 0.40 with A.2's cameras, 400 steps each; 0.72 at 800 steps)
        "cameras": {"width": 48, "height": 48},
    },
}
