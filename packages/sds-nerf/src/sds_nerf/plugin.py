"""Registers the `nerf` generator with sds (entry point group `sds`). No torch at import."""

from __future__ import annotations

from sds_core.api import PluginSpec, Registry, hookimpl


@hookimpl
def sds_register_generators(registry: Registry) -> None:
    from sds_nerf.config import NERF_PRESETS, NerfConfig

    registry.add(
        PluginSpec(
            name="nerf",
            factory="sds_nerf.generator:NerfGenerator",
            config=NerfConfig,
            description="DreamFusion's NeRF: mip-NeRF-style MLP (or hash grid), shading, mesh and video export.",
            presets=NERF_PRESETS,
        )
    )
