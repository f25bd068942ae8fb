"""Options of the `texture` generator and its presets (no torch: read by `sds plugins`).

The geometry is the user's mesh file, fixed; the parameters are a UV texture optimised under SDS in
texel space. Shading is DreamFusion's (Poole et al. 2023, §3.1, A.2) without its textureless mode,
which renders the geometry alone and so has no gradient for a texture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sds_core.api import BackgroundOptions, ExportOptions, ShadingOptions


@dataclass
class TextureConfig(ExportOptions, BackgroundOptions, ShadingOptions):
    """A texture on a fixed mesh: the mesh file, its atlas, the texture's side and pyramid, the
    rasteriser; shading, background and final/ as every 3D generator (`sds_core.options_3d`)."""

    # --- the mesh --------------------------------------------------------------------------------
    # the mesh file to texture (.obj, .glb, .gltf, .ply), y-up as glTF; read as it is, never changed
    mesh: str = ""
    # "auto": the file's UVs when every vertex has one, else an xatlas atlas; "xatlas": always xatlas
    uvs: Literal["auto", "xatlas"] = "auto"
    max_faces: int = 2_000_000  # a larger mesh is refused (about 1 KiB of work per face)
    max_file_mb: float = 512.0  # a larger file is refused before it is read
    # "face": flat normals of the triangles as given (exact for a cube); "vertex": area-weighted
    # vertex normals of the welded mesh (smooth shading of a tessellated curved surface)
    normals: Literal["face", "vertex"] = "face"

    # --- the texture ------------------------------------------------------------------------------
    # texture_size (ExportOptions): the side of the optimised texture, in texels, written as is
    texture_size: int = 1024
    # the texture's logits are a sum of levels of halving sides down to this one (a Laplacian-style
    # pyramid): a render far coarser than the texture still moves every texel it sees, through the
    # coarse levels; the finest level keeps per-texel detail. texture_size or more: texels only.
    pyramid_min_side: int = 1
    init_color: tuple[float, float, float] = (0.5, 0.5, 0.5)  # the texture's starting albedo

    # --- shading ----------------------------------------------------------------------------------
    # A.2 draws half of the shaded renders textureless (rho = 1): of a fixed mesh that shows no texture,
    # so it carries no gradient; shaded renders are Lambertian (any other value is refused)
    textureless_probability: float = 0.0

    # --- rasterisation ----------------------------------------------------------------------------
    # "auto": nvdiffrast on CUDA when it is installed, else the PyTorch z-buffer ("hard")
    rasterizer: Literal["auto", "hard", "nvdiffrast"] = "auto"
    near: float = 0.05  # the near plane (world units): faces with a corner nearer are not drawn
    far: float = 4.0  # the far plane of nvdiffrast's depth (world units)
    # "on": draw only front faces (counter-clockwise seen from the camera), half the work; "off": both
    # sides, so an open mesh is textured on both (its normals turned to the camera); "auto": on for a
    # closed, consistently wound, outward-facing mesh (whose back faces never show), else off
    cull_backfaces: Literal["auto", "on", "off"] = "auto"
    # pixels per tile side of the PyTorch z-buffer; measured on the 16,748-face true sphere at 48 px
    # (2 cores): 8 px 0.125 s a render, 4 px 0.030 s, 2 px 0.060 s (without culling)
    tile_size: int = 4
    max_pairs: int = 2_000_000  # pixel x face pairs per chunk (bounds the z-buffer's memory)


TEXTURE_PRESETS: dict[str, dict[str, Any]] = {
    # Adam on the texture's logits (texels, not network weights: DreamFusion's Shampoo schedule, A.2,
    # is not for them)
    "default": {"optim": {"lr": 1e-2, "schedule": "constant"}},
    # 64 x 64 renders as DreamFusion's guidance (A.2); 512 px with a latent prior: --set cameras.width=512
    "paper": {
        "optim": {"lr": 1e-2, "schedule": "constant"},
        "run": {"steps": 5000},
        "cameras": {"width": 64, "height": 64},
    },
    # what a 2-core CPU finishes in well under a minute on the shapes world's true meshes
    "draft": {
        "generator": {"texture_size": 256, "albedo_only_steps": 100, "video_frames": 24, "video_resolution": 64},
        "optim": {"lr": 1e-2, "schedule": "constant"},
        "run": {"steps": 400, "preview_every": 200, "checkpoint_every": 200},
        "cameras": {"width": 48, "height": 48},
    },
}
