"""Registers the `shapes` prior (entry point `sds: shapes`). Torch is imported only by the factory.
The learned models `shapes-learned` / `shapes-learned-sd` are their own package, sds-shapes-learned."""

from __future__ import annotations

from sds_core.api import PluginSpec, Registry, hookimpl
from sds_shapes.config import SHAPES_PRESETS, ShapesConfig


@hookimpl
def sds_register_guidance(registry: Registry) -> None:
    registry.add(
        PluginSpec(
            name="shapes",
            factory="sds_shapes.guidance:ShapesGuidance",
            config=ShapesConfig,
            description="Exact offline prior over coloured primitives with known ground truth (no weights).",
            presets=SHAPES_PRESETS,
        )
    )
