"""Registers the `gaussians` generator with sds (entry point group `sds`). No torch at import."""

from __future__ import annotations

from sds_core.api import PluginSpec, Registry, hookimpl


@hookimpl
def sds_register_generators(registry: Registry) -> None:
    from sds_gaussians.config import GAUSSIAN_PRESETS, GAUSSIAN_RETIRED, GaussianConfig

    registry.add(
        PluginSpec(
            name="gaussians",
            factory="sds_gaussians.generator:GaussianGenerator",
            config=GaussianConfig,
            description="3D Gaussian splatting (DreamGaussian): PyTorch rasteriser on CPU, gsplat on CUDA.",
            presets=GAUSSIAN_PRESETS,
            retired=GAUSSIAN_RETIRED,
        )
    )
