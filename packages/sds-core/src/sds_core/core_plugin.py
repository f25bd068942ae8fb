"""The plugins sds-core ships, registered through its own entry point (`sds: core`) like every
other plugin package's: the `image` generator and the SDS family of losses. No torch here: the
configs are torch-free and the factories are imported only when a run builds them."""

from __future__ import annotations

from sds_core.generators.image_config import IMAGE_PRESETS, ImageConfig
from sds_core.hookspecs import hookimpl
from sds_core.losses.family_config import CSDConfig, ISMConfig, NFSDConfig, SJCConfig, VSDConfig
from sds_core.losses.sds_config import SDSConfig
from sds_core.plugins import PluginSpec, Registry


@hookimpl
def sds_register_generators(registry: Registry) -> None:
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
    for spec in (
        PluginSpec(
            name="sds",
            factory="sds_core.losses.sds:SDSLoss",
            config=SDSConfig,
            description="Score Distillation Sampling with classifier-free guidance (DreamFusion §3).",
        ),
        PluginSpec(
            name="csd",
            factory="sds_core.losses.csd:CSDLoss",
            config=CSDConfig,
            description="Classifier Score Distillation: the classifier score only (Yu et al. 2023).",
        ),
        PluginSpec(
            name="nfsd",
            factory="sds_core.losses.nfsd:NFSDLoss",
            config=NFSDConfig,
            description="Noise-Free Score Distillation, with a negative prompt (Katzir et al. 2024).",
        ),
        PluginSpec(
            name="ism",
            factory="sds_core.losses.ism:ISMLoss",
            config=ISMConfig,
            description="Interval Score Matching over DDIM inversion (LucidDreamer, Liang et al. 2024).",
        ),
        PluginSpec(
            name="sjc",
            factory="sds_core.losses.sjc:SJCLoss",
            config=SJCConfig,
            description="Score Jacobian Chaining's perturb-and-denoise score (Wang et al. 2023).",
        ),
        PluginSpec(
            name="vsd",
            factory="sds_core.losses.vsd:VSDLoss",
            config=VSDConfig,
            description="Variational Score Distillation with a trained eps_phi (ProlificDreamer, 2023).",
        ),
    ):
        registry.add(spec)
