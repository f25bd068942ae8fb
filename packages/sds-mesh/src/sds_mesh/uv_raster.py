"""Hard rasterisation for a fixed mesh: which face each pixel sees, and where on it.

The `texture` generator optimises a texture over geometry that never moves, so visibility needs no
gradient: the render is differentiable in the texture through the bilinear texture lookup alone
(`sds_mesh.texture.sample_texture`), and the soft silhouettes of `sds_mesh.rasterizer` (which exist
to move vertices) would only blur the object's edges. Two back ends return the same `Hits`:
- `HardRasterizer`: PyTorch, CPU or CUDA. Written here because no library rasterises on the CPU
  from PyTorch (nvdiffrast and PyTorch3D's fast paths are CUDA-only; see `sds_mesh.rasterizer`):
  a z-buffer over tiles (a face only meets the tiles its bounding box overlaps), nearest face by
  perspective-correct depth, perspective-correct barycentrics.
- `NvdiffrastHits`: nvdiffrast's CUDA rasteriser (Laine et al. 2020), its triangle ids and
  barycentrics, for 512 px renders with a latent prior on a GPU.

Screen space as `sds_mesh.rasterizer.project`: x right, y up, in pixels; image rows run top down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from sds_core.api import CameraBatch
from sds_mesh.rasterizer import _cross, project, to_camera


@dataclass
class Hits:
    """Per pixel: the face seen (B, H, W) int64, -1 for none, and its perspective-correct
    barycentrics (B, H, W, 3), zero where no face is seen. No gradients."""

    face: Tensor
    bary: Tensor

    @property
    def covered(self) -> Tensor:
        return self.face >= 0


class HitRasterizer(Protocol):
    def __call__(self, cameras: CameraBatch, vertices: Tensor, faces: Tensor) -> Hits: ...


class HardRasterizer:
    """A tiled z-buffer in PyTorch (see the module docstring)."""

    def __init__(
        self, near: float = 0.05, tile_size: int = 8, max_pairs: int = 2_000_000, cull_backfaces: bool = False
    ) -> None:
        self.near, self.tile, self.max_pairs, self.cull_backfaces = near, tile_size, max_pairs, cull_backfaces

    @torch.no_grad()
    def __call__(self, cameras: CameraBatch, vertices: Tensor, faces: Tensor) -> Hits:
        b, h, w, tile = cameras.batch_size, cameras.height, cameras.width, self.tile
        xy, depth = project(cameras, vertices)
        tri_xy, tri_z = xy[:, faces], depth[:, faces]  # (B, F, 3, 2), (B, F, 3)
        area = _cross(tri_xy[:, :, 1] - tri_xy[:, :, 0], tri_xy[:, :, 2] - tri_xy[:, :, 0])
        keep = (tri_z.min(-1).values > self.near) & ((area > 1e-12) if self.cull_backfaces else (area.abs() > 1e-12))
        tiles_y, tiles_x = math.ceil(h / tile), math.ceil(w / tile)
        n_tiles = tiles_y * tiles_x
        lo, hi = tri_xy.min(2).values, tri_xy.max(2).values
        start = torch.arange(max(tiles_y, tiles_x), device=xy.device, dtype=xy.dtype) * tile + 0.5
        x0, x1 = start[:tiles_x], start[:tiles_x] + tile - 1  # pixel centres of each tile column
        y1 = h - start[:tiles_y]  # the top pixel row of tile row r (y up)
        y0 = y1 - (tile - 1)
        in_x = (hi[:, None, :, 0] >= x0[None, :, None]) & (lo[:, None, :, 0] <= x1[None, :, None])
        in_y = (hi[:, None, :, 1] >= y0[None, :, None]) & (lo[:, None, :, 1] <= y1[None, :, None])
        overlap = (in_y[:, :, None] & in_x[:, None] & keep[:, None, None]).reshape(b * n_tiles, -1)
        counts = overlap.sum(-1)
        busy = torch.nonzero(counts > 0).squeeze(-1)
        busy = busy[torch.argsort(counts[busy], descending=True)]
        face = torch.full((b * n_tiles, tile * tile), -1, dtype=torch.long, device=xy.device)
        bary = xy.new_zeros(b * n_tiles, tile * tile, 3)
        offsets = torch.arange(tile * tile, device=xy.device)
        local = torch.stack([offsets % tile + 0.5, -(offsets // tile).to(xy.dtype)], -1).to(xy.dtype)
        first = 0
        while first < busy.numel():
            k = int(counts[busy[first]])  # the busiest tile of the chunk: tiles are sorted by count
            n = max(1, self.max_pairs // (tile * tile * k))
            chunk = busy[first : first + n]
            first += n
            faces_of = overlap[chunk].to(torch.uint8).topk(k, dim=-1).indices  # (C, K): overlapping first
            valid = torch.arange(k, device=xy.device) < counts[chunk, None]
            cam = chunk // n_tiles
            tile_id = chunk % n_tiles
            corner = torch.stack([(tile_id % tiles_x) * tile, h - 0.5 - (tile_id // tiles_x) * tile], -1)
            p = corner[:, None].to(xy.dtype) + local[None]  # (C, P, 2) pixel centres
            hit, weights = self._nearest(p, tri_xy[cam[:, None], faces_of], tri_z[cam[:, None], faces_of], valid)
            face[chunk] = torch.where(hit >= 0, torch.gather(faces_of, 1, hit.clamp_min(0)), torch.full_like(hit, -1))
            bary[chunk] = weights
        face = face.view(b, tiles_y, tiles_x, tile, tile).permute(0, 1, 3, 2, 4).reshape(b, tiles_y * tile, -1)
        bary = bary.view(b, tiles_y, tiles_x, tile, tile, 3).permute(0, 1, 3, 2, 4, 5)
        bary = bary.reshape(b, tiles_y * tile, tiles_x * tile, 3)
        return Hits(face[:, :h, :w].contiguous(), bary[:, :h, :w].contiguous())

    @staticmethod
    def _nearest(p: Tensor, fxy: Tensor, fz: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """The nearest covering candidate of each pixel (C, P) (-1 for none) and its barycentrics (C, P, 3).

        p (C, P, 2); fxy (C, K, 3, 2); fz (C, K, 3); valid (C, K).
        """
        p = p[:, :, None]  # (C, P, 1, 2)
        a, b_, c = (fxy[:, None, :, i] for i in range(3))  # (C, 1, K, 2)
        area = _cross(b_ - a, c - a)
        area = torch.where(area.abs() < 1e-12, torch.full_like(area, 1e-12), area)
        screen = torch.stack([_cross(b_ - p, c - p), _cross(c - p, a - p), _cross(a - p, b_ - p)], -1) / area[..., None]
        inside = (screen >= 0).all(-1) & valid[:, None]  # (C, P, K), edges included
        q = screen / fz[:, None]  # perspective correction: screen weights over depth
        inv_depth = q.sum(-1)
        depth = torch.where(inside, 1.0 / inv_depth.clamp_min(1e-12), torch.full_like(inv_depth, math.inf))
        best = depth.argmin(-1)  # (C, P)
        seen = torch.gather(inside, 2, best[..., None]).squeeze(-1)
        q_best = torch.gather(q, 2, best[..., None, None].expand(*best.shape, 1, 3)).squeeze(2)
        weights = q_best / q_best.sum(-1, keepdim=True).clamp_min(1e-12)
        return torch.where(seen, best, torch.full_like(best, -1)), torch.where(seen[..., None], weights, 0.0)


class NvdiffrastHits:
    """nvdiffrast's triangle ids and perspective-correct barycentrics (CUDA)."""

    def __init__(self, device: torch.device, near: float = 0.05, far: float = 4.0) -> None:
        import nvdiffrast.torch as dr

        self.dr = dr
        self.context = dr.RasterizeCudaContext(device=device)
        self.near, self.far = near, far

    @torch.no_grad()
    def __call__(self, cameras: CameraBatch, vertices: Tensor, faces: Tensor) -> Hits:
        cam = to_camera(cameras, vertices.float())
        focal = cameras.focal.float().view(-1, 1)
        n, f = self.near, self.far
        x = 2 * focal / cameras.width * cam[..., 0]
        y = 2 * focal / cameras.height * cam[..., 1]
        z = (f + n) / (n - f) * cam[..., 2] + 2 * f * n / (n - f)
        pos = torch.stack([x, y, z, -cam[..., 2]], dim=-1).contiguous()  # OpenGL clip coordinates
        rast, _ = self.dr.rasterize(self.context, pos, faces.to(torch.int32).contiguous(),
                                    resolution=[cameras.height, cameras.width])  # fmt: skip
        rast = rast.flip(1)  # nvdiffrast's first row is the bottom of the image; ours is the top
        u, v = rast[..., 0], rast[..., 1]  # barycentrics of corners 1 and 2
        face = rast[..., 3].round().long() - 1
        bary = torch.stack([1 - u - v, u, v], -1) * (face >= 0)[..., None]
        return Hits(face, bary)


def build_hit_rasterizer(kind: str, device: torch.device, near: float, far: float, tile_size: int,
                         max_pairs: int, cull_backfaces: bool) -> HitRasterizer:  # fmt: skip
    """ "auto": nvdiffrast on CUDA when it imports, else the PyTorch z-buffer; "hard": always PyTorch."""
    from sds_core.api import ConfigError

    if kind not in ("auto", "hard", "nvdiffrast"):
        raise ConfigError(f"generator.rasterizer={kind!r} is not known; accepted: auto, hard, nvdiffrast")
    if kind == "nvdiffrast" or (kind == "auto" and device.type == "cuda"):
        if device.type != "cuda":
            raise ConfigError("generator.rasterizer=nvdiffrast needs a CUDA device; use rasterizer=hard on CPU")
        try:
            return NvdiffrastHits(device, near, far)
        except ImportError:
            if kind == "nvdiffrast":
                raise ConfigError(
                    "generator.rasterizer=nvdiffrast but nvdiffrast is not installed; "
                    "install sds-mesh[nvdiffrast] or use rasterizer=hard"
                ) from None
    return HardRasterizer(near, tile_size, max_pairs, cull_backfaces)
