"""The PyTorch rasteriser against gsplat's definitions, written out pixel by pixel."""

from __future__ import annotations

import math

import torch

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_gaussians.rasterizer import (
    ALPHA_THRESHOLD,
    MAX_ALPHA,
    TRANSMITTANCE_MIN,
    Splats,
    camera_matrices,
    project,
    rasterize,
)


def orbit(n: int = 2, side: int = 16, distance: float = 1.5):
    return CameraSampler(CameraConfig(width=side, height=side)).orbit(n, elevation=20.0, distance=distance)


def random_splats(n: int, cameras: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> Splats:
    gen = torch.Generator().manual_seed(seed)
    return Splats(
        means=(torch.rand(n, 3, generator=gen) - 0.5).to(dtype) * 0.6,
        quats=torch.randn(n, 4, generator=gen).to(dtype),
        scales=(0.02 + 0.08 * torch.rand(n, 3, generator=gen)).to(dtype),
        opacities=(torch.rand(n, generator=gen) ** 2).to(dtype),  # some below 1/255
        colors=torch.rand(cameras, n, 3, generator=gen).to(dtype),
    )


def reference(splats: Splats, cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """gsplat's rasterize_to_pixels, one pixel at a time over every Gaussian in front of the near
    plane, depth-sorted (no boxes: the rasteriser's boxes must not change the image)."""
    viewmats, ks = camera_matrices(cameras)
    w, h = cameras.width, cameras.height
    proj = project(splats.means, splats.quats, splats.scales, splats.opacities, viewmats, ks, w, h)
    color = torch.zeros(cameras.batch_size, h, w, 3, dtype=splats.means.dtype)
    alpha = torch.zeros(cameras.batch_size, h, w, 1, dtype=splats.means.dtype)
    for b in range(cameras.batch_size):
        drawn = [i for i in torch.argsort(proj.depths[b]).tolist() if proj.depths[b, i] > 0.01]
        for y in range(h):
            for x in range(w):
                t = 1.0
                for i in drawn:
                    dx = float(proj.means2d[b, i, 0]) - (x + 0.5)
                    dy = float(proj.means2d[b, i, 1]) - (y + 0.5)
                    a, c2, c = proj.conics[b, i].tolist()
                    sigma = 0.5 * (a * dx * dx + c * dy * dy) + c2 * dx * dy
                    al = min(MAX_ALPHA, float(splats.opacities[i]) * math.exp(-sigma))
                    if sigma < 0 or al < ALPHA_THRESHOLD:
                        continue
                    if t * (1 - al) <= TRANSMITTANCE_MIN:
                        break
                    color[b, y, x] += splats.colors[b, i] * al * t
                    t *= 1 - al
                alpha[b, y, x] = 1 - t
    return color, alpha


def test_matches_gsplats_per_pixel_definition() -> None:
    cams = orbit(2, side=12)
    splats = random_splats(40, 2)
    out = rasterize(splats, cams)
    color, alpha = reference(splats, cams)
    assert alpha.max() > 0.5  # the scene is in view
    assert torch.allclose(out.alpha, alpha, atol=1e-5)
    assert torch.allclose(out.color, color, atol=1e-5)


def test_an_opaque_stack_stops_at_the_transmittance_cut_off() -> None:
    """Forty opaque Gaussians on the line of sight of the centre pixel: the first leaves T = 1e-3
    (alpha is clamped to 0.999), the second would bring it to 1e-6 <= 1e-4, so gsplat stops there
    and the pixel's opacity is exactly 0.999."""
    cams = orbit(1, side=9, distance=2.0)
    n = 40
    position = cams.position[0]
    means = torch.stack([position * (0.1 + 0.01 * i) for i in range(n)])  # on the ray through the centre
    splats = Splats(means, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.full((n, 3), 0.2),
                    torch.full((n,), 1.0), torch.rand(1, n, 3))  # fmt: skip
    out = rasterize(splats, cams)
    assert abs(float(out.alpha[0, 4, 4, 0]) - MAX_ALPHA) < 1e-6
    _, alpha = reference(splats, cams)
    assert torch.allclose(out.alpha, alpha, atol=1e-6)


def test_bands_bound_memory_without_changing_the_image() -> None:
    cams = orbit(2, side=16)
    splats = random_splats(200, 2, seed=1)
    whole = rasterize(splats, cams, max_pairs=10_000_000)
    banded = rasterize(splats, cams, max_pairs=500)
    assert torch.allclose(whole.color, banded.color, atol=1e-6)
    assert torch.allclose(whole.alpha, banded.alpha, atol=1e-6)


def test_a_gaussian_facing_the_camera_has_the_ewa_footprint() -> None:
    """An isotropic Gaussian at the look-at point: its 2D covariance is (f s / z)^2 + 0.3 px^2."""
    cams = orbit(1, side=33, distance=2.0)
    s, o = 0.2, 0.8
    splats = Splats(torch.zeros(1, 3), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), s),
                    torch.tensor([o]), torch.ones(1, 1, 3))  # fmt: skip
    out = rasterize(splats, cams)
    proj = project(splats.means, splats.quats, splats.scales, splats.opacities, *camera_matrices(cams), 33, 33)
    mx, my = proj.means2d[0, 0].tolist()
    var = (float(cams.focal[0]) * s / 2.0) ** 2 + 0.3
    y, x = 16, 20
    expected = o * math.exp(-0.5 * ((x + 0.5 - mx) ** 2 + (y + 0.5 - my) ** 2) / var)
    assert abs(float(out.alpha[0, y, x, 0]) - expected) < 1e-4
    assert abs(mx - 16.5) < 1e-4 and abs(my - 16.5) < 1e-4  # the look-at point projects to the centre


def test_gradients_match_finite_differences() -> None:
    cams = orbit(1, side=10)
    base = random_splats(12, 1, seed=3, dtype=torch.float64)
    leaves = {k: getattr(base, k).clone().requires_grad_(True) for k in ("means", "scales", "opacities", "colors")}

    def loss(means, scales, opacities, colors):
        out = rasterize(Splats(means, base.quats, scales, opacities, colors), cams)
        weights = torch.linspace(0.5, 1.5, out.color.numel(), dtype=torch.float64).view_as(out.color)
        return (out.color * weights).sum() + out.alpha.sum()

    assert torch.autograd.gradcheck(loss, tuple(leaves.values()), eps=1e-6, atol=1e-4, rtol=1e-3)
