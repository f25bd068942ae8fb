"""Fixed analytic fields for tests: the real NerfField code path with a closed-form MLP output."""

from __future__ import annotations

import torch
from torch import Tensor

from sds_core.protocols import BuildContext
from sds_nerf.config import NerfConfig
from sds_nerf.field import NerfField
from sds_nerf.generator import NerfGenerator


class SphereField(NerfField):
    """log tau = sharpness (radius - |x|): a ball of radius `ball` with a colour varying in space."""

    ball = 0.6
    sharpness = 20.0

    def _features(self, points: Tensor) -> Tensor:
        r = points.norm(dim=-1, keepdim=True)
        raw = self.sharpness * (self.ball - r)
        color = torch.stack([points[..., 0] * 3, points[..., 1] * 3, points[..., 2] * 0 + 2.0], -1)
        return torch.cat([raw, color], -1)


def sphere_generator(**overrides: object) -> NerfGenerator:
    """A NerfGenerator on CPU whose field is `SphereField` (no blob, no bias)."""
    options = {"blob": "none", "density_bias": 0.0, "background": "solid", **overrides}
    cfg = NerfConfig(**options)  # type: ignore[arg-type]
    gen = NerfGenerator(cfg, BuildContext(device=torch.device("cpu"), prompt="a sphere", total_steps=10))
    gen.field = SphereField(cfg)
    return gen
