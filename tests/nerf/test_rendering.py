"""Sampling with empty-space skipping, volume rendering and each shading mode, on fixed fields."""

from __future__ import annotations

import pytest
import torch

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_nerf.sampling import OccupancyGrid, TorchSampler, sphere_intersect
from tests.nerf.helpers import sphere_generator

# Tolerance of skipping against dense sampling on the fixed ball (log tau = 20 (0.6 - r)): cells
# below alpha 0.01 per step are skipped, so silhouette pixels, whose rays graze the thin shell
# of low density, may differ by up to 2 %; the mean difference stays below 1e-3.
SKIP_TOLERANCE = 2e-2
SKIP_MEAN_TOLERANCE = 1e-3


def orbit(n: int = 2, side: int = 24, distance: float = 3.0) -> object:
    return CameraSampler(CameraConfig(width=side, height=side)).orbit(n, elevation=20.0, distance=distance)


def test_sphere_intersection() -> None:
    o = torch.tensor([[0.0, 0.0, 3.0], [0.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    near, far, hit = sphere_intersect(o, d, 1.4)
    assert hit.tolist() == [True, False, True]
    assert torch.allclose(near, torch.tensor([1.6, 0.0, 0.0])) and torch.allclose(far, torch.tensor([4.4, 0.0, 1.4]))


def test_stratified_intervals_tile_the_chord_and_the_field_is_read_at_their_centres() -> None:
    """mip-NeRF's sampling (the IPE Gaussian sits at the interval's centre): jittered edges that
    still tile [near, far], points at the midpoints."""
    torch.manual_seed(0)
    o = torch.tensor([[0.0, 0.0, 3.0]]).repeat(4, 1)
    d = torch.tensor([[0.0, 0.0, -1.0]]).repeat(4, 1)
    samples = TorchSampler(1.4, 16)(o, d, None, stratified=True)
    assert torch.allclose(samples.t_starts[:, 0], torch.tensor(1.6))
    assert torch.allclose(samples.t_ends[:, -1], torch.tensor(4.4))
    assert torch.equal(samples.t_starts[:, 1:], samples.t_ends[:, :-1]) and (samples.t_ends > samples.t_starts).all()
    assert torch.allclose(samples.t_points, (samples.t_starts + samples.t_ends) / 2)
    uniform = torch.linspace(1.6, 4.4, 17)[:-1]
    assert not torch.allclose(samples.t_starts, uniform.expand(4, -1))  # jittered


def test_skipping_renders_the_dense_image_with_fewer_samples() -> None:
    gen = sphere_generator(samples_per_ray=64, occupancy_resolution=48).eval()
    gen.grid.update(gen.field.density, jitter=False)
    assert 0.0 < gen.grid.occupied_fraction() < 0.5
    cams = orbit()
    with torch.no_grad():
        dense = gen.render_views(cams, ["albedo"] * 2, skipping=False)
        dense_samples = gen.last_stats["samples_per_ray"]
        skip = gen.render_views(cams, ["albedo"] * 2, skipping=True)
        skip_samples = gen.last_stats["samples_per_ray"]
    assert (dense.image - skip.image).abs().max() < SKIP_TOLERANCE
    assert (dense.image - skip.image).abs().mean() < SKIP_MEAN_TOLERANCE
    assert (dense.opacity - skip.opacity).abs().max() < SKIP_TOLERANCE  # type: ignore[operator]
    assert skip_samples < 0.5 * dense_samples
    assert dense.opacity.max() > 0.99 and dense.opacity.min() < 0.01  # type: ignore[union-attr]


def test_grid_before_first_update_keeps_everything() -> None:
    grid = OccupancyGrid(1.4, 16, threshold=1.0)
    assert grid.query(torch.zeros(5, 3)).all()
    assert not grid.query(torch.full((1, 3), 2.0)).any()


def test_cpu_rendering_never_calls_cuda_only_nerfacc(monkeypatch: pytest.MonkeyPatch) -> None:
    import nerfacc
    from nerfacc.estimators.occ_grid import OccGridEstimator

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a CUDA-only nerfacc function was called on CPU")

    monkeypatch.setattr(OccGridEstimator, "sampling", boom)
    monkeypatch.setattr(nerfacc, "ray_aabb_intersect", boom, raising=False)
    gen = sphere_generator(samples_per_ray=16, occupancy_resolution=16, occupancy_warmup=0)
    gen.train()
    render = gen.render(orbit(1, 8), step=0)
    render.image.sum().backward()
    assert gen.nerfacc is None and gen.grid.updates == 1


def test_each_shading_mode() -> None:
    gen = sphere_generator(samples_per_ray=96, background_color=(0.0, 0.0, 1.0)).eval()
    cams = orbit(1, 24, distance=2.0)
    images = {}
    for mode in ("albedo", "lambertian", "textureless"):
        render = gen.render_views(cams, [mode])
        assert render.shading == [mode]
        assert render.opacity is not None and render.opacity.shape == (1, 1, 24, 24)
        images[mode] = render.image.detach()
    opacity = render.opacity.detach()  # type: ignore[union-attr]
    solid = opacity[0, 0] > 0.999
    empty = opacity[0, 0] < 1e-3
    assert solid.sum() > 50 and empty.sum() > 50
    # the background shows where the ball is not
    assert torch.allclose(images["albedo"][0][:, empty], torch.tensor([0.0, 0.0, 1.0])[:, None], atol=1e-3)
    # albedo: sigmoid of the field's colour logits, the blue channel is sigmoid(2)
    assert torch.allclose(images["albedo"][0, 2][solid], torch.sigmoid(torch.tensor(2.0)), atol=2e-2)
    # textureless is grey (rho = 1), between ambient (0.1) and ambient + diffuse (1.0), brightest
    # where the surface faces the light (the orbit lights from the camera side)
    geo = images["textureless"][0][:, solid]
    assert torch.allclose(geo[0], geo[1], atol=2e-3) and torch.allclose(geo[1], geo[2], atol=2e-3)
    assert geo.min() > 0.09 and geo.max() <= 1.0 and geo.max() > 0.8
    # lambertian = albedo x light, per sample; on an opaque surface, per pixel
    expected = images["albedo"][0][:, solid] * geo
    assert (images["lambertian"][0][:, solid] - expected).abs().max() < 3e-2


def test_training_render_is_albedo_first_and_carries_regularizer_inputs() -> None:
    gen = sphere_generator(samples_per_ray=16, albedo_only_steps=5).train()
    cams = CameraSampler(CameraConfig(width=8, height=8)).sample()
    render = gen.render(cams, step=0)
    assert render.shading == ["albedo"]
    terms = gen.regularizers(render, cams, step=0)
    assert set(terms) == {"orientation", "opacity"}
    torch.manual_seed(3)
    modes = {gen.render(cams, step=10).shading[0] for _ in range(30)}
    assert modes == {"albedo", "lambertian", "textureless"}
