"""Registers the `shapes` prior (entry point `sds: shapes`), and `shapes-learned` when its weights
are shipped. Torch is imported only by the factories."""

from __future__ import annotations

from pathlib import Path

from sds_core.api import PluginSpec, Registry, hookimpl
from sds_shapes.config import SHAPES_PRESETS, ShapesConfig

# the IF stage-I format model trained on this world (sds_shapes.learned, its model card in the folder)
SHAPES_LEARNED = Path(__file__).parent / "models" / "shapes-learned"


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
    if (SHAPES_LEARNED / "model_index.json").is_file():
        # the deepfloyd-if backend (sds-guidance) unchanged, pointed at the shipped folder: derived
        # through the registry, so that this package does not import sds-guidance
        registry.derive(
            "shapes-learned",
            base="deepfloyd-if",
            defaults={"model": str(SHAPES_LEARNED)},
            description="A small DeepFloyd IF stage-I model trained on the shapes world (deepfloyd-if backend).",
        )
