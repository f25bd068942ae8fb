"""Camera and light sampling exactly as DreamFusion Appendix A.2, with view labels (§3.2).

Multi-view steps (`cameras.views_per_object` = V > 1, MVDream, Shi et al. 2024): the batch is
B / V objects of V consecutive views each; an object's views share elevation, distance, focal and
a random start azimuth, and sit at `relative_azimuths` from it (evenly spaced by default); each
view keeps its own position jitter, look-at point, up vector and light, drawn as in A.2. V = 1
draws exactly as before, in the same order.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sds_core.config import CameraConfig
from sds_core.errors import ConfigError
from sds_core.protocols import CameraBatch


def view_labels(elevation: Tensor, azimuth: Tensor, cfg: CameraConfig) -> list[str]:
    """§3.2: "overhead" above the elevation threshold, else front / back / side by azimuth.

    Azimuth 0 deg is the front; angles are in degrees.
    """
    labels: list[str] = []
    for elev, azim in zip(elevation.tolist(), azimuth.tolist(), strict=True):
        a = (azim + 180.0) % 360.0 - 180.0  # (-180, 180]
        if elev > cfg.overhead_elevation:
            labels.append("overhead")
        elif abs(a) <= cfg.front_half_angle:
            labels.append("front")
        elif abs(a) >= 180.0 - cfg.back_half_angle:
            labels.append("back")
        else:
            labels.append("side")
    return labels


def spherical_to_cartesian(elevation_deg: Tensor, azimuth_deg: Tensor, distance: Tensor) -> Tensor:
    """Points at the given elevation / azimuth / distance (z up, azimuth 0 on +x)."""
    el = torch.deg2rad(elevation_deg)
    az = torch.deg2rad(azimuth_deg)
    return torch.stack(
        [distance * torch.cos(el) * torch.cos(az), distance * torch.cos(el) * torch.sin(az), distance * torch.sin(el)],
        dim=-1,
    )


def look_at(position: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """Camera-to-world matrices (B, 4, 4) with OpenGL axes: the camera looks along its -z."""
    forward = target - position
    forward = forward / forward.norm(dim=-1, keepdim=True)
    right = torch.linalg.cross(forward, up, dim=-1)
    # Straight overhead the up vector is parallel to the view: fall back to +x as "up".
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    alt_up = torch.tensor([1.0, 0.0, 0.0], dtype=position.dtype, device=position.device).expand_as(up)
    right = torch.where(degenerate, torch.linalg.cross(forward, alt_up, dim=-1), right)
    right = right / right.norm(dim=-1, keepdim=True)
    true_up = torch.linalg.cross(right, forward, dim=-1)
    c2w = torch.zeros(position.shape[0], 4, 4, dtype=position.dtype, device=position.device)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = true_up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = position
    c2w[:, 3, 3] = 1.0
    return c2w


def relative_azimuths(cfg: CameraConfig) -> tuple[float, ...]:
    """The azimuths (degrees) of an object's views relative to its random start: `cfg.relative_azimuths`,
    or `views_per_object` evenly spaced (MVDream's four views: 0, 90, 180, 270)."""
    views = cfg.views_per_object
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise ConfigError(f"cameras.views_per_object must be a whole number of at least 1, not {views!r}")
    if cfg.relative_azimuths is None:
        return tuple(i * 360.0 / views for i in range(views))
    offsets = tuple(float(a) for a in cfg.relative_azimuths)
    if len(offsets) != views or not all(math.isfinite(a) for a in offsets):
        raise ConfigError(
            f"cameras.relative_azimuths must give {views} finite angles (one per view of "
            f"cameras.views_per_object={views}), not {list(cfg.relative_azimuths)!r}"
        )
    return offsets


def check_views(batch_size: int, views: int) -> None:
    """ConfigError unless a batch of `batch_size` cameras holds whole objects of `views` views."""
    if views > 1 and batch_size % views:
        raise ConfigError(
            f"cameras.batch_size={batch_size} is not a multiple of cameras.views_per_object={views}; "
            f"set cameras.batch_size to {views}, {2 * views}, ..."
        )


def _uniform(low: float, high: float, n: int, generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


class CameraSampler:
    """Random training cameras and lights (A.2), and fixed orbits for previews and export."""

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self.relative_azimuths = relative_azimuths(cfg)
        check_views(cfg.batch_size, cfg.views_per_object)

    def sample_elevation(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """A.2: half uniform in angle, half uniform in area (sin(elevation) uniform)."""
        lo, hi = self.cfg.elevation_range
        by_angle = _uniform(lo, hi, n, generator)
        s = _uniform(math.sin(math.radians(lo)), math.sin(math.radians(hi)), n, generator)
        by_area = torch.rad2deg(torch.asin(s.clamp(-1.0, 1.0)))
        use_area = torch.rand(n, generator=generator) < self.cfg.area_uniform_fraction
        return torch.where(use_area, by_area, by_angle)

    def sample(self, batch_size: int | None = None, generator: torch.Generator | None = None) -> CameraBatch:
        """B random cameras with their lights; uses the global torch RNG unless given one."""
        cfg = self.cfg
        n = batch_size or cfg.batch_size
        views = cfg.views_per_object
        if views == 1:  # A.2: every camera on its own (the draws of the sampler before multi-view steps)
            elevation = self.sample_elevation(n, generator)
            azimuth = _uniform(*cfg.azimuth_range, n, generator) % 360.0
            distance = _uniform(*cfg.distance_range, n, generator)
            focal = _uniform(*cfg.focal_range, n, generator) * cfg.width
        else:  # multi-view: per object one elevation, start azimuth, distance and focal, shared by its views
            check_views(n, views)
            objects = n // views
            elevation = self.sample_elevation(objects, generator).repeat_interleave(views)
            start = _uniform(*cfg.azimuth_range, objects, generator).repeat_interleave(views)
            offsets = torch.tensor(self.relative_azimuths, dtype=start.dtype).repeat(objects)
            azimuth = (start + offsets) % 360.0
            distance = _uniform(*cfg.distance_range, objects, generator).repeat_interleave(views)
            focal = _uniform(*cfg.focal_range, objects, generator).repeat_interleave(views) * cfg.width
        position = spherical_to_cartesian(elevation, azimuth, distance)
        position = position + (torch.rand(n, 3, generator=generator) * 2 - 1) * cfg.position_jitter
        target = torch.randn(n, 3, generator=generator) * cfg.target_std
        up = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3) + torch.randn(n, 3, generator=generator) * cfg.up_std
        c2w = look_at(position, target, up)
        light = self.sample_light(position, generator)
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

    def sample_light(self, camera_position: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A.2: direction ~ N(camera position, I), distance ~ U(0.8, 1.5) from the origin."""
        cfg = self.cfg
        n = camera_position.shape[0]
        direction = camera_position + torch.randn(n, 3, generator=generator) * cfg.light_std
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return direction * _uniform(*cfg.light_distance_range, n, generator).unsqueeze(-1)

    def orbit(
        self,
        n: int,
        elevation: float = 30.0,
        distance: float | None = None,
        focal_multiplier: float | None = None,
        width: int | None = None,
        height: int | None = None,
        start_azimuth: float = 0.0,
    ) -> CameraBatch:
        """n cameras evenly spaced in azimuth, looking at the origin, lit from the camera."""
        cfg = self.cfg
        width = width or cfg.width
        height = height or cfg.height
        distance = distance if distance is not None else sum(cfg.distance_range) / 2
        focal_multiplier = focal_multiplier if focal_multiplier is not None else sum(cfg.focal_range) / 2
        azimuth = (start_azimuth + torch.arange(n, dtype=torch.float32) * 360.0 / n) % 360.0
        elev = torch.full((n,), float(elevation))
        dist = torch.full((n,), float(distance))
        position = spherical_to_cartesian(elev, azimuth, dist)
        up = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3)
        c2w = look_at(position, torch.zeros(n, 3), up)
        return CameraBatch(
            c2w=c2w,
            focal=torch.full((n,), focal_multiplier * width),
            width=width,
            height=height,
            elevation=elev,
            azimuth=azimuth,
            distance=dist,
            light_position=position * 1.2,
            views=view_labels(elev, azimuth, cfg),
        )
