"""Registers the guidance backends of sds-guidance (entry point `sds: guidance`).

Torch, diffusers and transformers are imported only by the factories, when a run builds one.
"""

from __future__ import annotations

from sds_core.api import PluginSpec, Registry, hookimpl
from sds_guidance.config import (
    MVDREAM_PRESETS,
    MVDREAM_RECIPES,
    STABLE_DIFFUSION_PRESETS,
    ZERO123_PRESETS,
    ZERO123_RECIPES,
    DeepFloydIFConfig,
    FluxConfig,
    MVDreamConfig,
    StableDiffusion3Config,
    StableDiffusionConfig,
    StableDiffusionXLConfig,
    Zero123Config,
)


@hookimpl
def sds_register_guidance(registry: Registry) -> None:
    registry.add(
        PluginSpec(
            name="stable-diffusion",
            factory="sds_guidance.stable_diffusion:StableDiffusionGuidance",
            config=StableDiffusionConfig,
            description="Stable Diffusion 1.x/2.x from a hub id or folder (latent prior, VAE-encoded renders).",
            presets=STABLE_DIFFUSION_PRESETS,
        )
    )
    registry.add(
        PluginSpec(
            name="stable-diffusion-xl",
            factory="sds_guidance.stable_diffusion_xl:StableDiffusionXLGuidance",
            config=StableDiffusionXLConfig,
            description="Stable Diffusion XL from a hub id or folder (two CLIP encoders, size-conditioned latents).",
            presets=STABLE_DIFFUSION_PRESETS,
        )
    )
    registry.add(
        PluginSpec(
            name="stable-diffusion-3",
            factory="sds_guidance.stable_diffusion_3:StableDiffusion3Guidance",
            config=StableDiffusion3Config,
            description="Stable Diffusion 3 / 3.5 from a hub id or folder (rectified-flow MMDiT, CLIP L + G and T5).",
            presets=STABLE_DIFFUSION_PRESETS,
        )
    )
    registry.add(
        PluginSpec(
            name="flux",
            factory="sds_guidance.flux:FluxGuidance",
            config=FluxConfig,
            description="FLUX.1 from a hub id or folder (rectified-flow MMDiT, guidance-distilled for FLUX.1-dev).",
            presets=STABLE_DIFFUSION_PRESETS,
        )
    )
    registry.add(
        PluginSpec(
            name="deepfloyd-if",
            factory="sds_guidance.deepfloyd_if:DeepFloydIFGuidance",
            config=DeepFloydIFConfig,
            description="DeepFloyd IF stage I: 64x64 pixel prior with a T5 text encoder.",
        )
    )
    registry.add(
        PluginSpec(
            name="zero123",
            factory="sds_guidance.zero123:Zero123Guidance",
            config=Zero123Config,
            description="Zero-1-to-3 (XL) / Stable Zero123 from a hub id or folder: image-to-3D from --image.",
            presets=ZERO123_PRESETS,
            recipes=ZERO123_RECIPES,
        )
    )
    registry.add(
        PluginSpec(
            name="mvdream",
            factory="sds_guidance.mvdream:MVDreamGuidance",
            config=MVDreamConfig,
            description="MVDream (SD 2.1-base, 4 views) from a hub id or folder: multi-view steps of one object.",
            presets=MVDREAM_PRESETS,
            recipes=MVDREAM_RECIPES,
        )
    )
