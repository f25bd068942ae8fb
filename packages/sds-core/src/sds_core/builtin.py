"""The plugins that sds-core ships: the `image` generator and the `sds` loss."""

from __future__ import annotations

from sds_core.hookspecs import hookimpl
from sds_core.plugins import PluginSpec, Registry


@hookimpl
def sds_register_generators(registry: Registry) -> None:
    from sds_core.generators.image_config import IMAGE_PRESETS, ImageConfig

    registry.add(
        PluginSpec(
            name="image",
            factory="sds_core.generators.image:ImageGenerator",
            config=ImageConfig,
            description="A 2D image (pixels, or latents for a latent prior): the simplest SDS target.",
            presets=IMAGE_PRESETS,
        )
    )


@hookimpl
def sds_register_losses(registry: Registry) -> None:
    from sds_core.losses.sds_config import SDS_PRESETS, SDSConfig

    registry.add(
        PluginSpec(
            name="sds",
            factory="sds_core.losses.sds:SDSLoss",
            config=SDSConfig,
            description="Score Distillation Sampling with classifier-free guidance (DreamFusion §3).",
            presets=SDS_PRESETS,
        )
    )
