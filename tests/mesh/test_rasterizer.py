"""The soft rasteriser: coverage of a known shape, gradients against finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_mesh.mesh import icosphere, vertex_normals
from sds_mesh.rasterizer import SoftRasterizer, project

# cameras looking at the origin from one distance and focal length (no A.2 jitter)
FIXED_FRAMING = {
    "target_std": 0.0,
    "position_jitter": 0.0,
    "up_std": 0.0,
    "distance_range": (1.25, 1.25),
    "focal_range": (1.5, 1.5),
}


def _cameras(n: int, side: int, elevation: float = 20.0):
    return CameraSampler(CameraConfig(width=side, height=side)).orbit(n, elevation=elevation)


def test_projection_matches_camera_rays() -> None:
    """A point on a pixel's ray projects onto that pixel's centre (x right, y up)."""
    cams = _cameras(2, 16)
    origins, dirs = cams.rays()
    point = origins[1, 3, 11] + 0.8 * dirs[1, 3, 11]
    xy, depth = project(cams, point[None])
    assert xy[1, 0].tolist() == pytest.approx([11.5, 16 - 3.5], abs=1e-4)
    assert float(depth[1, 0]) > 0


def test_sphere_silhouette_and_surface() -> None:
    cams = _cameras(2, 48)
    mesh = icosphere(3, 0.3, (1.0, 0.0, 0.0))
    v, f = torch.tensor(mesh.vertices), torch.tensor(mesh.faces)
    attrs = torch.cat([torch.tensor(mesh.colors), vertex_normals(v, f), v], -1)
    frags = SoftRasterizer(sigma=0.1, tile_size=8)(cams, v, f, attrs)
    d, focal = float(cams.distance[0]), float(cams.focal[0])
    disc = math.pi * (focal * math.tan(math.asin(0.3 / d))) ** 2
    area = float(frags.opacity[0].sum())
    assert 0.93 * disc < area < 1.07 * disc
    centre = frags.attributes[0, 24, 24]
    view = cams.position[0] / cams.position[0].norm()
    assert torch.allclose(centre[:3], torch.tensor([1.0, 0.0, 0.0]), atol=1e-4)  # albedo
    assert float((centre[3:6] / centre[3:6].norm()) @ view) > 0.98  # normal faces the camera
    assert torch.allclose(centre[6:9], 0.3 * view, atol=0.03)  # the visible point of the sphere
    assert float(frags.opacity[0, 0, 0]) < 1e-4  # a corner sees the background


@pytest.mark.parametrize("subdivisions", [3, 5])
def test_silhouette_coverage_is_unbiased_whatever_the_tessellation(subdivisions: int) -> None:
    """The outline's area matches the disc within 1.5 % at sigma 0.5 px^2 (summed coverage: > 10 % more)."""
    cams = CameraSampler(CameraConfig(width=48, height=48, **FIXED_FRAMING)).orbit(2, elevation=20.0)
    mesh = icosphere(subdivisions, 0.3, (1.0, 0.0, 0.0))
    v, f = torch.tensor(mesh.vertices), torch.tensor(mesh.faces)
    d, focal = float(cams.distance[0]), float(cams.focal[0])
    disc = math.pi * (focal * math.tan(math.asin(0.3 / d))) ** 2
    silhouette = SoftRasterizer(sigma=0.5, coverage="silhouette")(cams, v, f, v).opacity
    summed = SoftRasterizer(sigma=0.5, coverage="sum")(cams, v, f, v).opacity
    assert float(silhouette[0].sum()) == pytest.approx(disc, rel=0.015)
    assert float(summed[0].sum()) > 1.1 * disc


def test_silhouette_coverage_leaves_no_seam_at_self_occlusion() -> None:
    """A small sphere in front of a big one: its outline over the big one stays fully opaque."""
    cams = _cameras(1, 48, elevation=0.0)
    big, small = icosphere(3, 0.3, (1.0, 0.0, 0.0)), icosphere(3, 0.1, (0.0, 1.0, 0.0))
    towards = (cams.position[0] / cams.position[0].norm()).double()
    v = torch.cat([torch.tensor(big.vertices), torch.tensor(small.vertices) + 0.4 * towards])
    f = torch.cat([torch.tensor(big.faces), torch.tensor(small.faces) + len(big.vertices)])
    frags = SoftRasterizer(sigma=0.5)(cams, v, f, v)
    opacity = frags.opacity[0, ..., 0]
    # pixels within 6 px of the centre: the small sphere's outline (about 4 px) over the big one
    rows, cols = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    near_centre = ((rows + 0.5 - 24) ** 2 + (cols + 0.5 - 24) ** 2) < 36
    assert float(opacity[near_centre].min()) > 0.999
    assert float(opacity[0, 0]) < 1e-4  # the background is still clear


@pytest.mark.parametrize(("cull", "coverage"), [(True, "silhouette"), (False, "silhouette"), (True, "sum")])
def test_vertex_gradients_match_finite_differences(cull: bool, coverage: str) -> None:
    torch.manual_seed(0)
    cams = _cameras(2, 16, elevation=25.0)
    cams.c2w = cams.c2w.double()
    mesh = icosphere(1, 0.35, (0.2, 0.5, 0.8))
    base = torch.tensor(mesh.vertices, dtype=torch.float64)
    base = base * (1 + 0.1 * torch.rand(len(base), 1, dtype=torch.float64))  # not a sphere
    faces = torch.tensor(mesh.faces)
    colors = torch.rand(len(base), 3, dtype=torch.float64)
    raster = SoftRasterizer(sigma=1.0, gamma=0.05, cull_backfaces=cull, tile_size=4, max_pairs=3000, coverage=coverage)
    probe = torch.rand(2, 16, 16, 4, dtype=torch.float64)

    def loss(v: torch.Tensor) -> torch.Tensor:
        frags = raster(cams, v, faces, colors)
        return (torch.cat([frags.attributes, frags.opacity], -1) * probe).sum()

    v = base.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(v), v)
    eps = 1e-6
    checked = 0
    for index in torch.randperm(len(base))[:12].tolist():
        for axis in range(3):
            plus, minus = base.clone(), base.clone()
            plus[index, axis] += eps
            minus[index, axis] -= eps
            numeric = float(loss(plus) - loss(minus)) / (2 * eps)
            assert float(grad[index, axis]) == pytest.approx(numeric, rel=1e-3, abs=1e-5)
            checked += abs(numeric) > 1e-3
    assert checked > 6  # the probe saw most of those vertices


def test_memory_bound_gives_the_same_image() -> None:
    """Chunking pixel x face pairs is an implementation detail: any max_pairs, the same result."""
    cams = _cameras(1, 32)
    mesh = icosphere(2, 0.3, (0.5, 0.5, 0.5))
    v, f = torch.tensor(mesh.vertices), torch.tensor(mesh.faces)
    big = SoftRasterizer(max_pairs=10_000_000)(cams, v, f, v)
    small = SoftRasterizer(max_pairs=500)(cams, v, f, v)
    assert torch.allclose(big.attributes, small.attributes, atol=1e-5)
    assert torch.allclose(big.opacity, small.opacity, atol=1e-6)


def test_nvdiffrast_matches_the_soft_rasteriser_on_cuda() -> None:
    pytest.importorskip("nvdiffrast")
    if not torch.cuda.is_available():
        pytest.skip("nvdiffrast needs CUDA")
    from sds_mesh.rasterizer import NvdiffrastRasterizer

    device = torch.device("cuda")
    cams = _cameras(2, 64).to(device)
    mesh = icosphere(3, 0.3, (0.5, 0.5, 0.5))
    v, f = torch.tensor(mesh.vertices, device=device), torch.tensor(mesh.faces, device=device)
    hard = NvdiffrastRasterizer(device)(cams, v, f, v)
    soft = SoftRasterizer(sigma=0.05)(cams, v, f, v)
    assert float((hard.opacity - soft.opacity).abs().mean()) < 0.02
    inside = (hard.opacity[..., 0] > 0) & (soft.opacity[..., 0] > 0.99)
    assert torch.allclose(hard.attributes[inside], soft.attributes[inside], atol=0.02)
