"""Point callables (density or colour at (N, 3) world points) evaluated in chunks without gradients."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from sds_core.api import check_grid_side

PointFn = Callable[[Tensor], Tensor]
CHUNK = 65536  # points a call


def _chunks(
    fn: PointFn, total: int, points_of: Callable[[int, int], np.ndarray], device: torch.device | str, chunk: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, stop, fn(points_of(start, stop)) as float32 numpy), `chunk` points at a time."""
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        pts = torch.as_tensor(points_of(start, stop), dtype=torch.float32, device=device)
        yield start, stop, fn(pts).float().cpu().numpy()


@torch.no_grad()
def evaluate(fn: PointFn, points: np.ndarray, device: torch.device | str = "cpu", chunk: int = CHUNK) -> np.ndarray:
    """fn at (N, 3) points, in chunks, as a numpy array."""
    out = [value for _, _, value in _chunks(fn, len(points), lambda a, b: points[a:b], device, chunk)]
    return np.concatenate(out) if out else np.zeros((0,), dtype=np.float32)


@torch.no_grad()
def density_grid(
    density_fn: PointFn, resolution: int, radius: float, device: torch.device | str = "cpu", chunk: int = CHUNK
) -> np.ndarray:
    """Density at the nodes of a resolution^3 grid spanning [-radius, radius]^3 (index order x, y, z).

    The resolution is checked against `sds_core.limits.MAX_GRID_SIDE` first (it may come from
    `--resolution` or a checkpoint's recorded `mesh_resolution`); the points are made a chunk at a
    time, so the grid itself (4 bytes a node) is the only resolution^3 allocation."""
    check_grid_side(resolution, "the marching-cubes resolution", purpose="its grid")
    axis = np.linspace(-radius, radius, resolution, dtype=np.float32)

    def nodes(start: int, stop: int) -> np.ndarray:
        i, rest = np.divmod(np.arange(start, stop), resolution * resolution)
        j, k = np.divmod(rest, resolution)
        return np.stack([axis[i], axis[j], axis[k]], -1)

    total = resolution**3
    grid = np.empty(total, dtype=np.float32)
    for start, stop, value in _chunks(density_fn, total, nodes, device, chunk):
        grid[start:stop] = value.reshape(-1)
    return grid.reshape(resolution, resolution, resolution)
