"""Differentiable rasterisation of 3D Gaussians: gsplat's EWA splatting, in PyTorch for the CPU.

gsplat (Ye et al. 2024, the library DreamGaussian-style generators use through their own CUDA
forks) installs as a pure-Python wheel, but its rasterisation is CUDA-only: `rasterize_to_pixels`
and the tile intersection are compiled kernels, and its PyTorch reference (`gsplat/cuda/
_torch_impl.py`) covers projection and spherical harmonics only. No maintained library renders
Gaussians differentiably on a CPU, so the rasteriser is written here, following gsplat 1.5.3's
definitions so that the CUDA path (`sds_gaussians.gsplat_backend`) renders the same image:

- projection (`_fully_fused_projection`, `_persp_proj`): Sigma = R S S^T R^T from the normalised
  quaternion (w, x, y, z) and the scales; the camera-space covariance W Sigma W^T is projected
  with the Jacobian J of the pinhole map at the mean, whose x/z and y/z are clamped to 1.3 times
  the field of view; the 2D covariance is dilated by eps2d = 0.3 px^2 on its diagonal ("classic"
  mode: no opacity compensation), det clamped to 1e-10, conic = its inverse; a Gaussian is kept
  when near (0.01) < depth < far (1e10), its opacity o >= 1/255 and its box reaches the image;
  the box half-sides are ceil(e sqrt(Sigma2D_xx)), ceil(e sqrt(Sigma2D_yy)) pixels with the
  opacity-aware extent e = min(3.33, sqrt(2 ln(255 o))) (gsplat's fused projection, after
  Radl et al. 2024, "StopThePop", B.2);
- compositing (`rasterize_to_pixels`): at pixel centres (x + 0.5, y + 0.5),
  sigma = 0.5 (a dx^2 + c dy^2) + b dx dy, alpha = min(0.999, o exp(-sigma)); a Gaussian with
  sigma < 0 or alpha < 1/255 is skipped; front to back by camera-space depth,
  T_next = T (1 - alpha), and the pixel stops before the first Gaussian whose T_next <= 1e-4
  (that one is not composited). Colour = sum alpha T c, opacity = 1 - T.

Outside its box a Gaussian's alpha is below 1/255 (along x, sigma >= dx^2 / (2 Sigma2D_xx) >
e^2 / 2 >= ln(255 o)), so enumerating each Gaussian's pixel box gives exactly the pixels gsplat's
tiles composite. Memory is bounded: the (pixel, Gaussian) pairs are built and composited
one band of image rows at a time, each band holding at most about `max_pairs` pairs. Within a
pixel the transmittance is an exclusive cumulative sum of log(1 - alpha) over the depth-sorted
pairs (float64, so that long pixels keep their precision), differentiable end to end.

Cameras: sds's are OpenGL (looking along -z, y up); gsplat's view matrices are OpenCV (looking
along +z, y down), so rows y and z of the world-to-camera matrix are negated. The pixel grid is
then the one of `CameraBatch.rays`: column x + 0.5, row y + 0.5 from the top-left corner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from sds_core.api import CameraBatch

EPS2D = 0.3  # gsplat rasterization(eps2d=0.3): px^2 added to the 2D covariance's diagonal
NEAR_PLANE = 0.01  # gsplat rasterization(near_plane=0.01)
FAR_PLANE = 1e10  # gsplat rasterization(far_plane=1e10)
EXTEND = 3.33  # gsplat GAUSSIAN_EXTEND: a box of 3.33 standard deviations
ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat ALPHA_THRESHOLD: fainter contributions are skipped
MAX_ALPHA = 0.999  # gsplat rasterize_to_pixels: alpha = min(0.999, o exp(-sigma))
TRANSMITTANCE_MIN = 1e-4  # gsplat: a pixel is done before the Gaussian that brings T to <= 1e-4
OPENGL_TO_OPENCV = (1.0, -1.0, -1.0)


@dataclass
class Splats:
    """The Gaussians to draw, activated: means (N, 3), unit or raw quaternions wxyz (N, 4),
    scales (N, 3), opacities (N,) in [0, 1], colours (B, N, C) (one set per camera)."""

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colors: Tensor


@dataclass
class RasterOutput:
    """Premultiplied colour (B, H, W, C) and opacity (B, H, W, 1); the projected means (B, N, 2),
    whose gradient densification reads, and the pixel radii (B, N, 2) (0: not drawn)."""

    color: Tensor
    alpha: Tensor
    means2d: Tensor
    radii: Tensor


class Rasterizer(Protocol):
    def __call__(self, splats: Splats, cameras: CameraBatch) -> RasterOutput: ...


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """(N, 3, 3) rotation matrices of quaternions (w, x, y, z), normalised first (as gsplat does)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape((*quats.shape[:-1], 3, 3))


def covariances(quats: Tensor, scales: Tensor) -> Tensor:
    """(N, 3, 3) world covariances R S S^T R^T."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def camera_matrices(cameras: CameraBatch) -> tuple[Tensor, Tensor]:
    """gsplat's inputs for sds cameras: OpenCV world-to-camera matrices (B, 4, 4) and
    intrinsics (B, 3, 3) with the principal point at the image centre."""
    w2c = torch.linalg.inv(cameras.c2w.float())
    flip = torch.tensor((*OPENGL_TO_OPENCV, 1.0), device=w2c.device, dtype=w2c.dtype)
    viewmats = w2c * flip[None, :, None]
    ks = torch.zeros(cameras.batch_size, 3, 3, device=w2c.device, dtype=w2c.dtype)
    ks[:, 0, 0] = cameras.focal.float()
    ks[:, 1, 1] = cameras.focal.float()
    ks[:, 0, 2] = cameras.width / 2
    ks[:, 1, 2] = cameras.height / 2
    ks[:, 2, 2] = 1.0
    return viewmats, ks


@dataclass
class Projection:
    means2d: Tensor  # (B, N, 2) pixels
    conics: Tensor  # (B, N, 3): a, b, c of the inverse 2D covariance
    depths: Tensor  # (B, N) camera-space z
    radii: Tensor  # (B, N, 2) int, 0 where the Gaussian is not drawn


def project(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    ks: Tensor,
    width: int,
    height: int,
    eps2d: float = EPS2D,
    near: float = NEAR_PLANE,
    far: float = FAR_PLANE,
) -> Projection:
    """gsplat's fully fused EWA projection (pinhole, classic mode, opacity-aware boxes), batched over cameras."""
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("bij,nj->bni", rot, means) + trans[:, None]
    covars_c = torch.einsum("bij,njk,blk->bnil", rot, covariances(quats, scales), rot)
    tx, ty, tz = means_c.unbind(-1)
    fx, fy = ks[:, 0, 0, None], ks[:, 1, 1, None]
    cx, cy = ks[:, 0, 2, None], ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx_c = tz * torch.minimum(torch.maximum(tx / tz, -lim_x_neg), lim_x_pos)
    ty_c = tz * torch.minimum(torch.maximum(ty / tz, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(tz)
    jac = torch.stack([fx / tz, zero, -fx * tx_c / tz**2, zero, fy / tz, -fy * ty_c / tz**2], -1)
    jac = jac.reshape((*tz.shape, 2, 3))
    cov2d = jac @ covars_c @ jac.transpose(-1, -2)
    cov2d = cov2d + eps2d * torch.eye(2, device=means.device, dtype=means.dtype)
    det = (cov2d[..., 0, 0] * cov2d[..., 1, 1] - cov2d[..., 0, 1] * cov2d[..., 1, 0]).clamp(min=1e-10)
    conics = torch.stack(
        [cov2d[..., 1, 1] / det, -(cov2d[..., 0, 1] + cov2d[..., 1, 0]) / 2.0 / det, cov2d[..., 0, 0] / det], -1
    )
    means2d = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], -1)
    with torch.no_grad():
        opacity = opacities.detach()[None, :, None]
        extend = torch.sqrt(2.0 * torch.log(opacity.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp(max=EXTEND)
        radius = torch.ceil(extend * torch.sqrt(torch.stack([cov2d[..., 0, 0], cov2d[..., 1, 1]], -1)))
        valid = (tz > near) & (tz < far) & (opacity[..., 0] >= ALPHA_THRESHOLD)
        x, y = means2d[..., 0], means2d[..., 1]
        inside = (x + radius[..., 0] > 0) & (x - radius[..., 0] < width)
        inside &= (y + radius[..., 1] > 0) & (y - radius[..., 1] < height)
        radius = torch.where((valid & inside)[..., None], radius, torch.zeros_like(radius))
    return Projection(means2d, conics, tz, radius.int())


def _take(values: Tensor, index: Tensor) -> Tensor:
    """`values[index]` along the first dimension, with a deterministic gradient: the backward of
    advanced indexing accumulates repeated indices with threaded atomic adds on the CPU (bits vary
    from run to run with more than one thread), index_select's backward (index_add) does not."""
    return torch.index_select(values, 0, index)


def _pixel_boxes(proj: Projection, width: int, height: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The drawn (camera, Gaussian) entries, front to back within each camera, and their pixel
    boxes clipped to the image: (entry index into B*N, x0, x1, y0, y1), bounds inclusive."""
    b, n = proj.depths.shape
    drawn = (proj.radii > 0).all(-1)
    depth = torch.where(drawn, proj.depths.detach(), torch.full_like(proj.depths, float("inf")))
    order = torch.argsort(depth, dim=1, stable=True)  # front to back per camera
    flat = (order + torch.arange(b, device=order.device)[:, None] * n).reshape(-1)
    flat = flat[drawn.reshape(-1)[flat]]
    centre = proj.means2d.detach().reshape(-1, 2)[flat]
    radius = proj.radii.reshape(-1, 2)[flat].to(centre.dtype)
    # pixel x covers [x, x + 1); its centre x + 0.5 lies in [m - r, m + r] iff x in [m - r - 0.5, m + r - 0.5]
    x0 = torch.ceil(centre[:, 0] - radius[:, 0] - 0.5).clamp(0, width - 1).long()
    x1 = torch.floor(centre[:, 0] + radius[:, 0] - 0.5).clamp(0, width - 1).long()
    y0 = torch.ceil(centre[:, 1] - radius[:, 1] - 0.5).clamp(0, height - 1).long()
    y1 = torch.floor(centre[:, 1] + radius[:, 1] - 0.5).clamp(0, height - 1).long()
    keep = (x1 >= x0) & (y1 >= y0)
    return flat[keep], x0[keep], x1[keep], y0[keep], y1[keep]


def _composite_band(
    entries: Tensor,
    x0: Tensor,
    x1: Tensor,
    y0: Tensor,
    y1: Tensor,
    proj: Projection,
    opacities: Tensor,
    colors: Tensor,
    width: int,
    height: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel keys (b*H*W + y*W + x), premultiplied colours and opacities of the pixels the
    entries (boxes already clipped to one band of rows) touch."""
    n = proj.depths.shape[1]
    w = x1 - x0 + 1
    counts = w * (y1 - y0 + 1)
    entry = torch.repeat_interleave(torch.arange(len(entries), device=entries.device), counts)
    local = torch.arange(len(entry), device=entries.device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    px = x0[entry] + local % w[entry]
    py = y0[entry] + local // w[entry]
    flat = entries[entry]
    cam = flat // n
    key = cam * (height * width) + py * width + px
    # a stable sort by pixel keeps each pixel's pairs front to back (entries are depth-sorted)
    key, perm = torch.sort(key, stable=True)
    flat, px, py = flat[perm], px[perm], py[perm]
    mean = _take(proj.means2d.reshape(-1, 2), flat)
    conic = _take(proj.conics.reshape(-1, 3), flat)
    dx = mean[:, 0] - (px.to(mean.dtype) + 0.5)
    dy = mean[:, 1] - (py.to(mean.dtype) + 0.5)
    sigma = 0.5 * (conic[:, 0] * dx * dx + conic[:, 2] * dy * dy) + conic[:, 1] * dx * dy
    alpha = torch.clamp(_take(opacities, flat % n) * torch.exp(-sigma), max=MAX_ALPHA)
    skip = (sigma < 0) | (alpha < ALPHA_THRESHOLD)
    alpha = torch.where(skip, torch.zeros_like(alpha), alpha)
    # transmittance before each pair: exp of the exclusive per-pixel cumulative sum of log(1 - alpha)
    log_keep = torch.log1p(-alpha.double())
    pixels, inverse, per_pixel = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
    total = log_keep.cumsum(0)
    start = per_pixel.cumsum(0) - per_pixel
    before = total - log_keep - _take(_take(total - log_keep, start), inverse)
    with torch.no_grad():
        on = (before + log_keep).exp() > TRANSMITTANCE_MIN  # gsplat stops before T_next <= 1e-4
    weight = (alpha.double() * before.exp()).to(alpha.dtype) * on
    color = _take(colors.reshape(-1, colors.shape[-1]), flat)  # flat = camera * N + Gaussian
    out_color = torch.zeros(len(pixels), colors.shape[-1], device=colors.device, dtype=colors.dtype)
    out_color = out_color.index_add(0, inverse, weight[:, None] * color)
    out_alpha = torch.zeros(len(pixels), device=colors.device, dtype=colors.dtype).index_add(0, inverse, weight)
    return pixels, out_color, out_alpha


def rasterize(splats: Splats, cameras: CameraBatch, max_pairs: int = 1_000_000, eps2d: float = EPS2D) -> RasterOutput:
    """Render the splats from each camera (the PyTorch rasteriser; see the module docstring)."""
    width, height, b = cameras.width, cameras.height, cameras.batch_size
    viewmats, ks = camera_matrices(cameras)
    viewmats, ks = viewmats.to(splats.means), ks.to(splats.means)
    proj = project(splats.means, splats.quats, splats.scales, splats.opacities, viewmats, ks, width, height, eps2d)
    entries, x0, x1, y0, y1 = _pixel_boxes(proj, width, height)
    channels = splats.colors.shape[-1]
    color = torch.zeros(b * height * width, channels, device=splats.means.device, dtype=splats.means.dtype)
    alpha = torch.zeros(b * height * width, device=splats.means.device, dtype=splats.means.dtype)
    bands = [(0, height - 1)]
    while bands:
        top, bottom = bands.pop()
        in_band = (y1 >= top) & (y0 <= bottom)
        cy0, cy1 = y0[in_band].clamp(min=top), y1[in_band].clamp(max=bottom)
        pairs = int(((x1[in_band] - x0[in_band] + 1) * (cy1 - cy0 + 1)).sum())
        if pairs == 0:
            continue
        if pairs > max_pairs and bottom > top:  # halve the band until it fits
            middle = (top + bottom) // 2
            bands += [(top, middle), (middle + 1, bottom)]
            continue
        keys, band_color, band_alpha = _composite_band(
            entries[in_band], x0[in_band], x1[in_band], cy0, cy1, proj, splats.opacities, splats.colors, width, height
        )
        color = color.index_add(0, keys, band_color)
        alpha = alpha.index_add(0, keys, band_alpha)
    return RasterOutput(
        color.view(b, height, width, channels), alpha.view(b, height, width, 1), proj.means2d, proj.radii
    )


class TorchRasterizer:
    """The PyTorch rasteriser with its memory bound (pairs per band)."""

    name = "torch"

    def __init__(self, max_pairs: int = 1_000_000, eps2d: float = EPS2D) -> None:
        self.max_pairs = max_pairs
        self.eps2d = eps2d

    def __call__(self, splats: Splats, cameras: CameraBatch) -> RasterOutput:
        return rasterize(splats, cameras, self.max_pairs, self.eps2d)
