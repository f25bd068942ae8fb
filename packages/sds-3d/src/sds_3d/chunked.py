"""Renders without gradients, a few cameras at a time (previews and turntables)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sds_core.api import CameraBatch, Render


@torch.no_grad()
def render_chunked(
    render_views: Callable[[CameraBatch, list[str]], Render], cameras: CameraBatch, mode: str, chunk: int = 4
) -> tuple[Tensor, Tensor]:
    """Images (B, 3, H, W) and opacities (B, 1, H, W) without gradients, `chunk` cameras at a time:
    `render_views(cameras, modes)` is a generator's differentiable render (a `Render` with opacity)."""
    images, opacities = [], []
    for start in range(0, cameras.batch_size, chunk):
        part = cameras[start : start + chunk]
        render = render_views(part, [mode] * part.batch_size)
        assert render.opacity is not None
        images.append(render.image)
        opacities.append(render.opacity)
    return torch.cat(images), torch.cat(opacities)
