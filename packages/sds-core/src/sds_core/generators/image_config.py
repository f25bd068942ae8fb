"""Options of the `image` generator (no torch: read by `sds plugins`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class ImageConfig:
    """A 2D image optimised directly: the simplest target of SDS."""

    # "auto": latents when the guidance is a latent model, pixels otherwise
    space: Literal["auto", "rgb", "latent"] = "auto"
    resolution: int | None = None  # None: the guidance's resolution (or latent resolution)
    init_std: float = 0.1  # std of the initial logits (pixels) or latents


IMAGE_PRESETS: dict[str, dict[str, Any]] = {
    # Pixels (or latents) optimised by Adam need a far larger step than a NeRF's weights.
    "default": {"optim": {"lr": 0.03, "schedule": "constant"}, "run": {"steps": 1000, "preview_every": 100}},
    "draft": {"run": {"steps": 300, "preview_every": 100, "checkpoint_every": 100}},
}
