"""Multi-view steps of the camera sampler (`cameras.views_per_object`, MVDream): V views of one
object at fixed relative azimuths with a shared elevation, distance and focal; V = 1 draws what
the A.2 sampler drew before the option existed, bit for bit."""

from __future__ import annotations

import pytest
import torch

from sds_core.cameras import CameraSampler, _uniform, look_at, spherical_to_cartesian, view_labels
from sds_core.config import CameraConfig
from sds_core.errors import ConfigError
from sds_core.protocols import CameraBatch


def _sample_before_multiview(sampler: CameraSampler, n: int, generator: torch.Generator | None) -> CameraBatch:
    """`CameraSampler.sample` as it was before multi-view steps (verbatim; the helpers it calls are unchanged)."""
    cfg = sampler.cfg
    elevation = sampler.sample_elevation(n, generator)
    azimuth = _uniform(*cfg.azimuth_range, n, generator) % 360.0
    distance = _uniform(*cfg.distance_range, n, generator)
    focal = _uniform(*cfg.focal_range, n, generator) * cfg.width
    position = spherical_to_cartesian(elevation, azimuth, distance)
    position = position + (torch.rand(n, 3, generator=generator) * 2 - 1) * cfg.position_jitter
    target = torch.randn(n, 3, generator=generator) * cfg.target_std
    up = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3) + torch.randn(n, 3, generator=generator) * cfg.up_std
    c2w = look_at(position, target, up)
    light = sampler.sample_light(position, generator)
    return CameraBatch(
        c2w=c2w,
        focal=focal,
        width=cfg.width,
        height=cfg.height,
        elevation=elevation,
        azimuth=azimuth,
        distance=distance,
        light_position=light,
        views=view_labels(elevation, azimuth, cfg),
    )


def _fields(batch: CameraBatch) -> list[torch.Tensor]:
    return [batch.c2w, batch.focal, batch.elevation, batch.azimuth, batch.distance, batch.light_position]


@pytest.mark.parametrize("seed", [0, 7])
def test_one_view_per_object_draws_as_before(seed: int) -> None:
    sampler = CameraSampler(CameraConfig(batch_size=3))
    new = sampler.sample(generator=torch.Generator().manual_seed(seed))
    old = _sample_before_multiview(sampler, 3, torch.Generator().manual_seed(seed))
    assert all(torch.equal(a, b) for a, b in zip(_fields(new), _fields(old), strict=True))
    assert new.views == old.views
    torch.manual_seed(seed)  # the global RNG, as the loop draws, and what is left of it after
    new = sampler.sample()
    after_new = torch.rand(4)
    torch.manual_seed(seed)
    old = _sample_before_multiview(sampler, 3, None)
    assert all(torch.equal(a, b) for a, b in zip(_fields(new), _fields(old), strict=True))
    assert torch.equal(after_new, torch.rand(4))
    if seed == 7:  # and the values themselves (the sampler's at the commit that added multi-view steps)
        one = CameraSampler(CameraConfig(batch_size=1)).sample(generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(one.elevation, torch.tensor([43.4923]), atol=1e-4, rtol=0)
        torch.testing.assert_close(one.azimuth, torch.tensor([236.4805]), atol=1e-4, rtol=0)


def test_four_views_of_an_object_are_90_degrees_apart() -> None:
    cfg = CameraConfig(batch_size=8, views_per_object=4, position_jitter=0.0, target_std=0.0, up_std=0.0)
    batch = CameraSampler(cfg).sample(generator=torch.Generator().manual_seed(3))
    assert batch.batch_size == 8
    for obj in range(2):
        views = slice(4 * obj, 4 * obj + 4)
        azimuth = batch.azimuth[views]
        steps = (azimuth - azimuth[0]) % 360.0
        torch.testing.assert_close(steps, torch.tensor([0.0, 90.0, 180.0, 270.0]), atol=1e-4, rtol=0)
        for shared in (batch.elevation, batch.distance, batch.focal):
            assert torch.equal(shared[views], shared[views][:1].expand(4))
        # the camera positions themselves: same height and radius, a quarter turn apart
        position = batch.position[views]
        torch.testing.assert_close(position[:, 2], position[:1, 2].expand(4))
        angle = torch.rad2deg(torch.atan2(position[:, 1], position[:, 0])) % 360.0
        torch.testing.assert_close(angle, azimuth, atol=1e-3, rtol=0)
    # two objects are drawn independently
    assert batch.elevation[0] != batch.elevation[4] and batch.azimuth[0] != batch.azimuth[4]


def test_relative_azimuths_and_bad_settings() -> None:
    cfg = CameraConfig(batch_size=2, views_per_object=2, relative_azimuths=(0.0, 45.0))
    batch = CameraSampler(cfg).sample(generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close((batch.azimuth[1] - batch.azimuth[0]) % 360.0, torch.tensor(45.0), atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match=r"cameras.batch_size=6 is not a multiple of cameras.views_per_object=4"):
        CameraSampler(CameraConfig(batch_size=6, views_per_object=4))
    with pytest.raises(ConfigError, match="not a multiple"):
        CameraSampler(CameraConfig(batch_size=4, views_per_object=4)).sample(batch_size=3)
    with pytest.raises(ConfigError, match="must give 4 finite angles"):
        CameraSampler(CameraConfig(batch_size=4, views_per_object=4, relative_azimuths=(0.0, 90.0)))
    with pytest.raises(ConfigError, match="at least 1"):
        CameraSampler(CameraConfig(views_per_object=0))
