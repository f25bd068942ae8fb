"""Backgrounds: the paper's MLP on the encoded ray direction, a solid colour, a random colour;
the background colour of every ray of a camera batch, for compositing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sds_3d.encoding import FrequencyEncoding
from sds_3d.rays import RayBundle
from sds_core.api import BackgroundOptions, DeclaresBackground

#: a background module: (ray directions (R, 3), camera of each ray (R,), cameras B) -> colours (R, 3)
Background = Callable[[Tensor, Tensor, int], Tensor]


def ray_background(background: Background, rays: RayBundle) -> Tensor:
    """The background colour (R, 3) of each ray, to composite a render over."""
    return background(rays.dirs, rays.camera, rays.batch_size)


class MLPBackground(nn.Module):
    """A.2: the background colour is an MLP of the positionally encoded ray direction."""

    def __init__(self, frequencies: int = 6, hidden: int = 64) -> None:
        super().__init__()
        self.encoding = FrequencyEncoding(3, frequencies)
        self.net = nn.Sequential(
            nn.Linear(self.encoding.out_dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 3),
        )

    def forward(self, dirs: Tensor, camera_index: Tensor, batch_size: int) -> Tensor:
        return torch.sigmoid(self.net(self.encoding(dirs)))


class SolidBackground(nn.Module):
    """One fixed colour; with `random=True`, a random colour per image while training."""

    color: Tensor

    def __init__(self, color: Sequence[float], random: bool = False) -> None:
        super().__init__()
        self.register_buffer("color", torch.tensor([float(c) for c in color]), persistent=False)
        self.random = random

    def forward(self, dirs: Tensor, camera_index: Tensor, batch_size: int) -> Tensor:
        if self.random and self.training:
            colors = torch.rand(batch_size, 3, device=dirs.device)
            return colors[camera_index]
        return self.color.to(dirs.dtype).expand(dirs.shape[0], 3)


def guidance_background(guidance: Any) -> tuple[float, float, float] | None:
    """The solid background colour a guidance declares (`shapes` does), as floats in [0, 1]."""
    value = guidance.background if isinstance(guidance, DeclaresBackground) else None
    if value is None:
        return None
    if isinstance(value, Tensor):
        value = value.detach().float().flatten().tolist()
    values = [float(v) for v in value]
    if len(values) != 3:
        return None
    if max(values) > 1.0:  # given in 0..255
        values = [v / 255.0 for v in values]
    return values[0], values[1], values[2]


def build_background(options: BackgroundOptions, guidance: Any) -> nn.Module:
    """`auto` is solid in the guidance's declared colour when there is one, else the paper's MLP."""
    kind, color = options.background, options.background_color
    frequencies, hidden = options.background_frequencies, options.background_hidden
    if kind == "auto":
        declared = guidance_background(guidance)
        return MLPBackground(frequencies, hidden) if declared is None else SolidBackground(declared)
    if kind == "mlp":
        return MLPBackground(frequencies, hidden)
    if kind == "solid":
        return SolidBackground(color)
    if kind == "random":
        return SolidBackground(color, random=True)
    raise ValueError(f"unknown background {kind!r}; accepted: auto, mlp, solid, random")
