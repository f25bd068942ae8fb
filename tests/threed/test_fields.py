"""Point callables in chunks (`sds_3d.fields`): any chunk size gives the same values."""

from __future__ import annotations

import numpy as np
import torch

from sds_3d.fields import density_grid, evaluate


def test_evaluate_in_chunks_is_one_call() -> None:
    points = np.random.default_rng(0).normal(size=(1001, 3))
    color = lambda p: p[:, :2] * 2 - 1  # noqa: E731  (exact arithmetic: any chunking gives the same bits)
    whole = color(torch.as_tensor(points, dtype=torch.float32)).numpy()
    for chunk in (1, 7, 1000, 5000):
        assert np.array_equal(evaluate(color, points, chunk=chunk), whole)
    assert evaluate(color, points[:0]).shape == (0,)


def test_density_grid_spans_the_cube_in_x_y_z_order() -> None:
    norm = lambda p: p.norm(dim=-1)  # noqa: E731
    grid = density_grid(norm, 5, 2.0, chunk=7)
    axis = np.linspace(-2.0, 2.0, 5, dtype=np.float32)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    assert grid.shape == (5, 5, 5) and grid.dtype == np.float32
    assert np.allclose(grid, np.sqrt(x**2 + y**2 + z**2))
    assert np.array_equal(density_grid(lambda p: p[:, 0] - 3 * p[:, 2], 5, 2.0, chunk=3), x - 3 * z)
