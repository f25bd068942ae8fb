"""The `image` generator: a 2D image (or latent grid) as the parameters, as in SDS on images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sds_core.generators.image_config import ImageConfig
from sds_core.imaging import save_image
from sds_core.protocols import BuildContext, CameraBatch, ExportContext, Render, Space


class ImageGenerator(nn.Module):
    """Pixels through a sigmoid (RGB in [0, 1]), or raw latents for a latent guidance."""

    view_dependent = False

    def __init__(self, config: ImageConfig, context: BuildContext) -> None:
        super().__init__()
        guidance = context.guidance_facts()  # its sizes and space
        if guidance is None:
            raise ValueError("the image generator needs the guidance to know its size")
        space = config.space
        if space == "auto":
            space = "latent" if guidance.space == "latent" else "rgb"
        if space == "latent" and guidance.space != "latent":
            from sds_core.errors import ConfigError

            raise ConfigError("generator.space=latent needs a latent guidance such as stable-diffusion")
        self.space = space
        if space == "latent":
            channels, side = guidance.channels, config.resolution or guidance.latent_resolution
        else:
            channels, side = 3, config.resolution or guidance.resolution
        self.param = nn.Parameter(torch.randn(1, channels, side, side) * config.init_std)

    def image(self) -> Tensor:
        return self.param if self.space == "latent" else torch.sigmoid(self.param)

    def render(self, cameras: CameraBatch, step: int) -> Render:
        image = self.image().expand(cameras.batch_size, -1, -1, -1)
        space: Space = "latent" if self.space == "latent" else "rgb"
        return Render(image=image, space=space, shading=["albedo"] * cameras.batch_size)

    def regularizers(self, render: Render, cameras: CameraBatch, step: int) -> dict[str, Tensor]:
        return {}

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.param]}]

    def preview(self, cameras: CameraBatch, step: int, shading: str | None = None) -> Tensor:
        if shading not in (None, "albedo"):
            raise ValueError(f"a 2D image has no {shading} shading")
        return self.image().detach()

    def export(self, out_dir: Any, context: ExportContext) -> list[Any]:
        out = Path(out_dir)
        image = self.image().detach()
        if self.space == "latent":
            if context.decode is None:
                raise ValueError("exporting latents needs the guidance's decoder (ExportContext.decode)")
            with torch.no_grad():
                image = context.decode(image)
        path = out / "image.png"
        save_image(image[0], path)
        return [path]
