"""Camera and light sampling against DreamFusion Appendix A.2, with fixed seeds."""

from __future__ import annotations

import math

import pytest
import torch

from sds_core.cameras import CameraSampler, look_at, spherical_to_cartesian, view_labels
from sds_core.config import CameraConfig

N = 20000


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    return CameraSampler(CameraConfig(width=64, height=64)).sample(N)


def test_elevation_is_an_even_mixture_of_angle_and_area_uniform() -> None:
    sampler = CameraSampler(CameraConfig())
    g = torch.Generator().manual_seed(1)
    elev = sampler.sample_elevation(N, g)
    assert elev.min() >= -10 and elev.max() <= 90
    # Mixture CDF at e: 0.5 * (e + 10) / 100 + 0.5 * (sin e - sin(-10)) / (1 - sin(-10))
    lo = math.sin(math.radians(-10))
    for e in (0.0, 20.0, 45.0, 70.0):
        cdf = 0.5 * (e + 10) / 100 + 0.5 * (math.sin(math.radians(e)) - lo) / (1 - lo)
        assert (elev <= e).float().mean().item() == pytest.approx(cdf, abs=0.015)
    # Pure components for contrast: all-angle and all-area configs follow their own CDFs.
    by_angle = CameraSampler(CameraConfig(area_uniform_fraction=0.0)).sample_elevation(N, g)
    by_area = CameraSampler(CameraConfig(area_uniform_fraction=1.0)).sample_elevation(N, g)
    assert (by_angle <= 40).float().mean().item() == pytest.approx(0.5, abs=0.015)
    assert (by_area <= 40).float().mean().item() == pytest.approx(
        (math.sin(math.radians(40)) - lo) / (1 - lo), abs=0.015
    )


def test_distance_focal_and_azimuth_ranges(batch) -> None:
    assert batch.distance.min() >= 1.0 and batch.distance.max() <= 1.5
    assert batch.distance.mean().item() == pytest.approx(1.25, abs=0.01)
    assert batch.distance.var().item() == pytest.approx(0.5**2 / 12, rel=0.05)
    mult = batch.focal / 64
    assert mult.min() >= 0.7 and mult.max() <= 1.35
    assert mult.mean().item() == pytest.approx((0.7 + 1.35) / 2, abs=0.01)
    assert batch.azimuth.min() >= 0 and batch.azimuth.max() < 360
    assert batch.azimuth.mean().item() == pytest.approx(180, abs=3)


def test_position_jitter_is_uniform_within_a_tenth(batch) -> None:
    ideal = spherical_to_cartesian(batch.elevation, batch.azimuth, batch.distance)
    jitter = batch.position - ideal
    assert jitter.abs().max() <= 0.1 + 1e-6
    assert jitter.abs().max() > 0.099
    assert jitter.var(0).mean().item() == pytest.approx(0.2**2 / 12, rel=0.05)


def test_look_at_point_and_up_are_perturbed(batch) -> None:
    forward = -batch.c2w[:, :3, 2]
    # The look-at target lies on each optical axis; its offset from the origin ~ N(0, 0.2^2 I).
    to_origin = -batch.position
    off_axis = to_origin - (to_origin * forward).sum(-1, keepdim=True) * forward
    mean_sq = off_axis.pow(2).sum(-1).mean().item()
    assert 0.2**2 * 2 * 0.8 < mean_sq < 0.2**2 * 2 * 1.2  # two directions across the axis
    rot = batch.c2w[:, :3, :3]
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3).expand(N, 3, 3), atol=1e-5, rtol=0)


def test_light_follows_camera_within_its_distance_range(batch) -> None:
    dist = batch.light_position.norm(dim=-1)
    assert dist.min() >= 0.8 - 1e-5 and dist.max() <= 1.5 + 1e-5
    cos = torch.nn.functional.cosine_similarity(batch.light_position, batch.position, dim=-1)
    assert cos.mean() > 0.5  # N(camera position, I): mostly on the camera's side


def test_view_labels_follow_paper_thresholds() -> None:
    cfg = CameraConfig()
    elev = torch.tensor([0.0, 0.0, 0.0, 0.0, 61.0, 59.0, 10.0])
    azim = torch.tensor([10.0, 350.0, 90.0, 180.0, 180.0, 200.0, 300.0])
    assert view_labels(elev, azim, cfg) == ["front", "front", "side", "back", "overhead", "back", "side"]
    custom = CameraConfig(overhead_elevation=50.0, front_half_angle=20.0)
    assert view_labels(torch.tensor([55.0, 0.0]), torch.tensor([0.0, 30.0]), custom) == ["overhead", "side"]


def test_rays_go_through_the_look_at_point() -> None:
    pos = torch.tensor([[2.0, 0.0, 0.0]])
    c2w = look_at(pos, torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]))
    cams = CameraSampler(CameraConfig(width=3, height=3)).orbit(1, elevation=0.0, distance=2.0)
    torch.testing.assert_close(cams.c2w, c2w)
    _origins, dirs = cams.rays()
    torch.testing.assert_close(dirs[0, 1, 1], torch.tensor([-1.0, 0.0, 0.0]))  # centre pixel
    assert dirs[0, 0, 1, 2] > 0  # the top row looks up (+z)
    assert dirs[0, 1, 0, 1] < 0  # the left column looks to -y, seen from +x with z up


def test_camera_batch_indexing_keeps_every_field_together() -> None:
    cams = CameraSampler(CameraConfig()).sample(4)
    one, last, pair = cams[1], cams[-1], cams[1:3]
    assert one.batch_size == 1 and last.batch_size == 1 and pair.batch_size == 2
    assert torch.equal(one.c2w[0], cams.c2w[1]) and one.views == cams.views[1:2]
    assert torch.equal(last.light_position[0], cams.light_position[3]) and last.views == cams.views[3:]
    assert torch.equal(pair.azimuth, cams.azimuth[1:3]) and (pair.width, pair.height) == (cams.width, cams.height)
