"""A camera batch's rays (`sds_3d.rays`) and the background of each ray (`sds_3d.background`)."""

from __future__ import annotations

import torch

from sds_3d.background import MLPBackground, SolidBackground, ray_background
from sds_3d.rays import camera_rays
from sds_core.api import CameraBatch, CameraConfig, CameraSampler


def cameras(batch: int = 3, side: int = 4) -> CameraBatch:
    return CameraSampler(CameraConfig(width=side, height=side + 1)).sample(batch, torch.Generator().manual_seed(0))


def test_rays_are_flattened_camera_by_camera() -> None:
    cams = cameras()
    origins, dirs = cams.rays()
    rays = camera_rays(cams)
    assert rays.batch_size == 3 and rays.dirs.shape == (3 * 5 * 4, 3)
    assert torch.equal(rays.dirs.view(3, 5, 4, 3), dirs) and torch.equal(rays.origins.view(3, 5, 4, 3), origins)
    assert torch.equal(rays.camera, torch.arange(3).repeat_interleave(20))
    part = rays[7:30]
    assert torch.equal(part.dirs, rays.dirs[7:30]) and torch.equal(part.camera, rays.camera[7:30])
    assert part.batch_size == 3


def test_background_of_every_ray() -> None:
    rays = camera_rays(cameras())
    solid = ray_background(SolidBackground((0.2, 0.4, 0.6)), rays)
    assert torch.equal(solid, torch.tensor([0.2, 0.4, 0.6]).expand(60, 3))
    random = SolidBackground((0.2, 0.4, 0.6), random=True).train()
    torch.manual_seed(0)
    per_image = ray_background(random, rays).view(3, 20, 3)
    assert torch.equal(per_image, per_image[:, :1].expand(3, 20, 3))  # one colour per camera
    assert not torch.equal(per_image[0, 0], per_image[1, 0])
    torch.manual_seed(0)
    mlp = MLPBackground()
    assert torch.equal(ray_background(mlp, rays), mlp(rays.dirs, rays.camera, 3))
