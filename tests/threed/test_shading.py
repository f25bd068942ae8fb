"""`sds_3d.shading.shade_views` against DreamFusion's formula written out, in the three layouts
the generators use: per pixel (B, H, W, 3), per Gaussian with a shared albedo (1, N, 3) -> (B, N, 3),
and per sample of flattened rays with a view index (S, 3)."""

from __future__ import annotations

import torch

from sds_3d.shading import SHADED, is_shaded, shade_views
from sds_core.api import ShadingOptions

OPTIONS = ShadingOptions(ambient=0.2, diffuse=0.7)
MODES = ["albedo", "lambertian", "textureless"]


def by_hand(
    mode: str, albedo: torch.Tensor, normal: torch.Tensor, point: torch.Tensor, light: torch.Tensor
) -> list[float]:
    """c = rho (l_rho max(0, n . (l - mu) / |l - mu|) + l_a), rho = 1 when textureless, for one point."""
    if mode == "albedo":
        return albedo.tolist()
    to_light = (light - point) / (light - point).norm()
    shade = OPTIONS.diffuse * max(0.0, float(normal @ to_light)) + OPTIONS.ambient
    rho = albedo if mode == "lambertian" else torch.ones(3)
    return (rho * shade).tolist()


def random_surface(*shape: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    albedo = torch.rand(*shape, 3, generator=g)
    normals = torch.nn.functional.normalize(torch.randn(*shape, 3, generator=g), dim=-1)
    points = torch.randn(*shape, 3, generator=g) * 0.3
    return albedo, normals, points


def test_per_pixel_modes_match_the_formula() -> None:
    albedo, normals, points = random_surface(3, 2, 4)
    light = torch.tensor([[0.0, 0.0, 2.0], [1.5, 0.0, 0.5], [0.0, -1.0, 1.0]])
    out = shade_views(MODES, albedo, normals, points, light, OPTIONS)
    assert out.shape == (3, 2, 4, 3)
    for v, mode in enumerate(MODES):
        for i in range(2):
            for j in range(4):
                expected = by_hand(mode, albedo[v, i, j], normals[v, i, j], points[v, i, j], light[v])
                assert torch.allclose(out[v, i, j], torch.tensor(expected), atol=1e-6), (mode, i, j)


def test_flattened_rows_follow_their_view() -> None:
    albedo, normals, points = random_surface(7)
    view = torch.tensor([2, 0, 1, 1, 2, 0, 2])
    light = torch.tensor([[0.0, 0.0, 2.0], [1.5, 0.0, 0.5], [0.0, -1.0, 1.0]])
    out = shade_views(MODES, albedo, normals, points, light, OPTIONS, view=view)
    for row in range(7):
        v = int(view[row])
        expected = by_hand(MODES[v], albedo[row], normals[row], points[row], light[v])
        assert torch.allclose(out[row], torch.tensor(expected), atol=1e-6)
    # the same rows laid out per view give the same colours
    grid = shade_views(MODES, albedo[None].expand(3, -1, -1), normals[None].expand(3, -1, -1),
                       points[None].expand(3, -1, -1), light, OPTIONS)  # fmt: skip
    assert torch.equal(out, grid[view, torch.arange(7)])


def test_a_shared_albedo_is_shaded_per_view() -> None:
    """The Gaussians' layout: one albedo and position per Gaussian, normals and lights per view
    (textureless included, with several views)."""
    albedo, normals, points = random_surface(1, 5)
    normals = torch.cat([normals, -normals])  # (2, 5, 3): turned towards each camera
    light = torch.tensor([[0.0, 0.0, 2.0], [0.0, 2.0, 0.0]])
    for modes in (["textureless", "lambertian"], ["albedo", "textureless"]):
        out = shade_views(modes, albedo, normals, points, light, OPTIONS)
        assert out.shape == (2, 5, 3)
        for v, mode in enumerate(modes):
            for n in range(5):
                expected = by_hand(mode, albedo[0, n], normals[v, n], points[0, n], light[v])
                assert torch.allclose(out[v, n], torch.tensor(expected), atol=1e-6)


def test_albedo_only_is_the_albedo_itself() -> None:
    albedo, normals, points = random_surface(2, 3)
    assert not is_shaded(["albedo", "albedo"]) and is_shaded(["albedo", SHADED[1]])
    assert shade_views(["albedo", "albedo"], albedo, normals, points, torch.zeros(2, 3), OPTIONS) is albedo


def test_gradients_reach_albedo_normals_and_points() -> None:
    albedo, normals, points = (t.clone().requires_grad_() for t in random_surface(2, 4))
    light = torch.tensor([[0.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    shade_views(["lambertian", "textureless"], albedo, normals, points, light, OPTIONS).sum().backward()
    assert albedo.grad is not None and albedo.grad[1].abs().sum() == 0  # textureless: rho = 1
    assert albedo.grad[0].abs().sum() > 0 and normals.grad is not None and points.grad is not None
