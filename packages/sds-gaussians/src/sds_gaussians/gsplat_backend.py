"""gsplat's CUDA rasteriser behind the interface of `sds_gaussians.rasterizer`.

gsplat 1.5 JIT-builds its CUDA kernels on first use (with `packaging`, which it imports without
declaring). The settings are the ones the PyTorch rasteriser reproduces: pinhole cameras, classic
mode (no opacity compensation), eps2d, near 0.01 and far 1e10 planes, colours given per camera
(the shading is per Gaussian and per view), no background (sds composites its own).
"""

from __future__ import annotations

from sds_core.api import CameraBatch
from sds_gaussians.rasterizer import EPS2D, FAR_PLANE, NEAR_PLANE, RasterOutput, Splats, camera_matrices


class GsplatRasterizer:
    name = "gsplat"

    def __init__(self, eps2d: float = EPS2D) -> None:
        import gsplat  # noqa: F401  (fails early, at build time, when it is missing)

        self.eps2d = eps2d

    def __call__(self, splats: Splats, cameras: CameraBatch) -> RasterOutput:
        from gsplat import rasterization

        viewmats, ks = camera_matrices(cameras)
        viewmats, ks = viewmats.to(splats.means), ks.to(splats.means)
        color, alpha, meta = rasterization(
            splats.means,
            splats.quats,
            splats.scales,
            splats.opacities,
            splats.colors,
            viewmats,
            ks,
            cameras.width,
            cameras.height,
            near_plane=NEAR_PLANE,
            far_plane=FAR_PLANE,
            eps2d=self.eps2d,
            sh_degree=None,
            packed=False,
            rasterize_mode="classic",
            render_mode="RGB",
        )
        return RasterOutput(color, alpha, meta["means2d"], meta["radii"])
