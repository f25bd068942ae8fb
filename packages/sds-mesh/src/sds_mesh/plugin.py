"""Registers the `mesh` and `texture` generators with sds (entry point group `sds`). No torch at import."""

from __future__ import annotations

from sds_core.api import PluginSpec, Registry, hookimpl


@hookimpl
def sds_register_generators(registry: Registry) -> None:
    from sds_mesh.config import MESH_PRESETS, MeshConfig
    from sds_mesh.texture_config import TEXTURE_PRESETS, TextureConfig

    registry.add(
        PluginSpec(
            name="mesh",
            factory="sds_mesh.generator:MeshGenerator",
            config=MeshConfig,
            description="An explicit triangle mesh (icosphere or a NeRF run's mesh), soft or nvdiffrast rasterisation.",
            presets=MESH_PRESETS,
        )
    )
    registry.add(
        PluginSpec(
            name="texture",
            factory="sds_mesh.texture:TextureGenerator",
            config=TextureConfig,
            description="SDS on a UV texture over a mesh file the user brings (geometry fixed, kept bit for bit).",
            presets=TEXTURE_PRESETS,
        )
    )
