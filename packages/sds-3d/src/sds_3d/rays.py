"""The rays of a camera batch, flattened, with the camera of each ray (for fields and backgrounds)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sds_core.api import CameraBatch


@dataclass
class RayBundle:
    """Rays of a camera batch, flattened: origins, directions, camera of each ray."""

    origins: Tensor  # (R, 3)
    dirs: Tensor  # (R, 3)
    camera: Tensor  # (R,) long
    batch_size: int

    def __getitem__(self, index: slice) -> RayBundle:
        """The rays at `index` (a chunk), of the same camera batch."""
        return RayBundle(self.origins[index], self.dirs[index], self.camera[index], self.batch_size)


def camera_rays(cameras: CameraBatch) -> RayBundle:
    """One ray per pixel, in (camera, row, column) order: R = B * H * W."""
    origins, dirs = cameras.rays()
    b, h, w, _ = dirs.shape
    camera = torch.arange(b, device=dirs.device).repeat_interleave(h * w)
    return RayBundle(origins.reshape(-1, 3), dirs.reshape(-1, 3), camera, b)
