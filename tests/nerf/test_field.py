"""The field: density blob, IPE annealing, hash grid, normals (autograd vs finite differences)."""

from __future__ import annotations

import math

import torch

from sds_nerf.config import NerfConfig
from sds_nerf.encoding import FrequencyEncoding, HashGridEncoding, annealed_variance
from sds_nerf.field import NerfField, density_blob
from tests.nerf.helpers import SphereField


def zero_head_field(**options: object) -> NerfField:
    field = NerfField(NerfConfig(**options))  # type: ignore[arg-type]
    torch.nn.init.zeros_(field.head.weight)
    torch.nn.init.zeros_(field.head.bias)
    return field


def test_dreamfusion_blob_density() -> None:
    """A.2: tau = exp(raw + bias + 5 exp(-|mu|^2 / (2 * 0.2^2))) with a zero MLP output."""
    field = zero_head_field(density_bias=-1.0)
    radii = torch.tensor([0.0, 0.2, 0.4, 1.0])
    points = torch.stack([radii, torch.zeros(4), torch.zeros(4)], -1)
    expected = torch.exp(-1.0 + 5.0 * torch.exp(-(radii**2) / (2 * 0.2**2)))
    assert torch.allclose(field.density(points), expected, rtol=1e-5)
    assert math.isclose(float(field.density(points[:1]).detach()), math.exp(4.0), rel_tol=1e-5)


def test_magic3d_and_no_blob() -> None:
    p = torch.tensor([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0], [0.0, 0.5, 0.0]])
    assert torch.allclose(density_blob(p, "magic3d"), torch.tensor([10.0, 5.0, 0.0]), atol=1e-4)
    assert torch.equal(density_blob(p, "none"), torch.zeros(3))
    field = zero_head_field(blob="none", density_bias=0.0)
    assert torch.allclose(field.density(p), torch.ones(3))


def test_ipe_variance_is_annealed_and_damps_high_frequencies() -> None:
    assert math.isclose(annealed_variance(0, 5e-2, 2e-3, 5000), 5e-2)
    assert math.isclose(annealed_variance(5000, 5e-2, 2e-3, 5000), 2e-3)
    assert math.isclose(annealed_variance(9000, 5e-2, 2e-3, 5000), 2e-3)
    # A.2: linear, not log-linear (the log-linear midpoint would be 1e-2)
    assert math.isclose(annealed_variance(2500, 5e-2, 2e-3, 5000), 2.6e-2)
    enc = FrequencyEncoding(3, 8)
    x = torch.rand(10, 3)
    plain, damped = enc(x), enc(x, variance=5e-2)
    assert plain.shape == (10, 3 * 17)
    # the top band 2^7 is damped by exp(-0.5 * 4^7 * 0.05): gone
    assert damped[:, -3:].abs().max() < 1e-6 and plain[:, -3:].abs().max() > 0.1
    field = NerfField(NerfConfig(encoding="ipe"))
    field.set_step(0)
    assert field.variance is not None and math.isclose(field.variance, 5e-2)


def test_autograd_normals_match_finite_differences() -> None:
    torch.manual_seed(0)
    cfg = NerfConfig(encoding="frequency", frequencies=3, hidden=32, blocks=2, finite_difference_eps=1e-4)
    field = NerfField(cfg).double()
    points = (torch.rand(256, 3, dtype=torch.float64) * 2 - 1) * 0.8
    _, _, n_auto = field.with_normals(points)
    n_fd = field.finite_difference_normals(points)
    cos = (n_auto * n_fd).sum(-1)
    assert cos.min() > 0.999, float(cos.min())
    assert torch.allclose(n_auto.norm(dim=-1), torch.ones(256, dtype=torch.float64))


def test_normals_point_outward_on_a_ball() -> None:
    field = SphereField(NerfConfig(blob="none", density_bias=0.0))
    points = torch.randn(64, 3)
    points = points / points.norm(dim=-1, keepdim=True) * 0.5
    _, _, normals = field.with_normals(points)
    assert torch.allclose(normals, points / 0.5, atol=1e-4)
    fd = SphereField(NerfConfig(blob="none", density_bias=0.0, normals="finite_difference"))
    _, _, normals_fd = fd.with_normals(points)
    assert torch.allclose(normals_fd, points / 0.5, atol=1e-3)


def test_autograd_normals_are_differentiable() -> None:
    field = NerfField(NerfConfig(encoding="frequency", frequencies=4, hidden=16, blocks=1))
    _, _, normals = field.with_normals(torch.rand(8, 3))
    normals[:, 0].sum().backward()
    assert field.inp.weight.grad is not None and field.inp.weight.grad.abs().sum() > 0


def test_hash_grid_is_trilinear_and_twice_differentiable() -> None:
    torch.manual_seed(0)
    enc = HashGridEncoding(levels=4, features=2, log2_size=12, base_resolution=4, max_resolution=64)
    with torch.no_grad():
        enc.table.normal_()
    x = torch.rand(32, 3)
    out = enc(x)
    assert out.shape == (32, 8)
    # trilinear: the encoding is linear along a segment inside one cell of the coarsest level
    a = torch.tensor([[0.30, 0.30, 0.30]])
    b = torch.tensor([[0.32, 0.30, 0.30]])
    mid = enc((a + b) / 2)[:, :2]
    assert torch.allclose(mid, (enc(a)[:, :2] + enc(b)[:, :2]) / 2, atol=1e-5)
    field = NerfField(NerfConfig(encoding="hashgrid", hash_levels=4, hash_log2_size=12, hidden=16, blocks=1))
    _, _, normals = field.with_normals(torch.rand(16, 3) - 0.5)
    normals.sum().backward()
    assert field.encoder.table.grad is not None


def test_voxel_field_interpolates_its_grid_in_world_axes() -> None:
    from sds_nerf.field import VoxelGridField

    cfg = NerfConfig(field="voxel", grid_resolution=9, blob="none", density_bias=0.0, normals="finite_difference")
    field = VoxelGridField(cfg)
    g = cfg.grid_resolution
    axis = torch.linspace(-cfg.radius, cfg.radius, g)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    with torch.no_grad():
        field.grid[0, 0] = x + 2 * y - z  # raw density, linear: trilinear interpolation is exact
    points = (torch.rand(64, 3) * 2 - 1) * cfg.radius
    expected = torch.exp(points[:, 0] + 2 * points[:, 1] - points[:, 2])
    assert torch.allclose(field.density(points), expected, rtol=1e-4)
    _, _, normals = field.with_normals(points)
    grad = torch.tensor([1.0, 2.0, -1.0])
    assert torch.allclose(normals, (-grad / grad.norm()).expand_as(normals), atol=1e-3)
    assert float(field.density(torch.full((1, 3), cfg.radius + 0.1))) == 0.0  # empty outside the grid


def test_ipe_step_is_saved_and_restored_with_the_field() -> None:
    """The variance follows the stored step: a field loaded from a state dict encodes as the saved one."""
    torch.manual_seed(0)
    cfg = NerfConfig(encoding="ipe", hidden=16, blocks=1, ipe_anneal_steps=100)
    trained = NerfField(cfg)
    trained.set_step(40)
    loaded = NerfField(cfg)
    assert loaded.variance is not None and math.isclose(loaded.variance, 5e-2)  # a fresh field: step 0
    loaded.load_state_dict(trained.state_dict())
    assert int(loaded.anneal_step) == 40 and loaded.variance == trained.variance
    x = torch.rand(64, 3)
    assert torch.equal(loaded.density(x), trained.density(x))
    # a checkpoint written before the step was saved loads with the anneal's end
    old = {k: v for k, v in trained.state_dict().items() if k != "anneal_step"}
    loaded.load_state_dict(old)
    assert loaded.variance is not None and math.isclose(loaded.variance, cfg.ipe_variance_end)
