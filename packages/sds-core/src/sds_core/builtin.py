"""The plugins that sds-core ships: the `image` generator and the SDS family of losses."""

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


# name (also the module in sds_core.losses), class, prefix of <P>Config / <P>_PRESETS in family_config
_FAMILY = (
    ("csd", "CSDLoss", "CSD", "Classifier Score Distillation: the classifier score only (Yu et al. 2023)."),
    ("nfsd", "NFSDLoss", "NFSD", "Noise-Free Score Distillation, with a negative prompt (Katzir et al. 2024)."),
    ("ism", "ISMLoss", "ISM", "Interval Score Matching over DDIM inversion (LucidDreamer, Liang et al. 2024)."),
    ("sjc", "SJCLoss", "SJC", "Score Jacobian Chaining's perturb-and-denoise score (Wang et al. 2023)."),
    ("vsd", "VSDLoss", "VSD", "Variational Score Distillation with a trained eps_phi (ProlificDreamer, 2023)."),
)


@hookimpl
def sds_register_losses(registry: Registry) -> None:
    from sds_core.losses import family_config
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
    for name, cls, prefix, description in _FAMILY:
        registry.add(
            PluginSpec(
                name=name,
                factory=f"sds_core.losses.{name}:{cls}",
                config=getattr(family_config, f"{prefix}Config"),
                description=description,
                presets=getattr(family_config, f"{prefix}_PRESETS"),
            )
        )
