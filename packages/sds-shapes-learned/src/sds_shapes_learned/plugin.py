"""Registers `shapes-learned` (IF format), `shapes-learned-sd` (Stable Diffusion format) and
`shapes-learned-flow` (Stable Diffusion 3 format) when their weights are shipped (entry point
`sds: shapes-learned`): sds-guidance's backends unchanged, pointed at the folders here. Imports no
torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sds_core.api import Registry, hookimpl

# the IF stage-I format model trained on the shapes world (this package's trainer; its model card in the folder)
SHAPES_LEARNED = Path(__file__).parent / "models" / "shapes-learned"
# the Stable Diffusion 1.x format model trained on the same renders (`--format sd`)
SHAPES_LEARNED_SD = Path(__file__).parent / "models" / "shapes-learned-sd"
# the Stable Diffusion 3 format rectified-flow model trained on the same renders (`--format sd3`)
SHAPES_LEARNED_FLOW = Path(__file__).parent / "models" / "shapes-learned-flow"


# The nerf options both cards measured with (the README's "How each option helps"): Magic3D's blob,
# which the models' small first fields need, and the cosine decay of the learning rate.
_NERF_OPTIONS: dict[str, dict[str, Any]] = {
    "generator": {"blob": "magic3d"},
    "optim": {"schedule": "warmup_cosine", "warmup_steps": 0, "lr_final": 5e-4},
}
# models/shapes-learned/README.md: `--preset draft --steps 6000` with the options above
SHAPES_LEARNED_RECIPES = {"nerf": {"draft": {**_NERF_OPTIONS, "run": {"steps": 6000}}}}
# models/shapes-learned-sd/README.md: `--preset draft --steps 300` with the options above and CFG 1,000
SHAPES_LEARNED_SD_RECIPES = {
    "nerf": {"draft": {**_NERF_OPTIONS, "run": {"steps": 300}, "loss": {"guidance_scale": 1000.0}}}
}
# models/shapes-learned-flow/README.md: `--preset draft --steps 300` with the options above and CFG 30
# (measured against the paper's 100 and against 1,000, where the cube and the sphere end lower:
# docs/experiments.md)
SHAPES_LEARNED_FLOW_RECIPES = {
    "nerf": {"draft": {**_NERF_OPTIONS, "run": {"steps": 300}, "loss": {"guidance_scale": 30.0}}}
}


def _training_options(folder: Path) -> dict[str, Any]:
    """The options the model was trained with (its training.json's config), empty if unreadable."""
    try:
        config = json.loads((folder / "training.json").read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return config if isinstance(config, dict) else {}


def _training_background(folder: Path) -> tuple[float, float, float]:
    """The background of the model's training renders (its training.json), white if unreadable."""
    try:
        red, green, blue = (float(v) for v in _training_options(folder)["background"])
    except (KeyError, ValueError, TypeError):
        return (1.0, 1.0, 1.0)  # the world's default (TrainConfig.background)
    return (red, green, blue)


def _t5_tokens(folder: Path) -> int:
    """How many zero T5 tokens the SD3 format model was trained with; the default 32 (SD3_DEFAULTS)
    if unreadable or above 512, FLUX's count (each token is a row of zeros the backend allocates)."""
    value = _training_options(folder).get("t5_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 512 else 32


@hookimpl
def sds_register_guidance(registry: Registry) -> None:
    if (SHAPES_LEARNED / "model_index.json").is_file():
        # the deepfloyd-if backend (sds-guidance) unchanged, pointed at the shipped folder, derived
        # through the registry. The backdrop of its training renders is declared, as the exact
        # prior declares its own.
        registry.derive(
            "shapes-learned",
            base="deepfloyd-if",
            defaults={"model": str(SHAPES_LEARNED), "background": _training_background(SHAPES_LEARNED)},
            description="A small DeepFloyd IF stage-I model trained on the shapes world (deepfloyd-if backend).",
            recipes=SHAPES_LEARNED_RECIPES,
        )
    if (SHAPES_LEARNED_SD / "model_index.json").is_file():
        # the stable-diffusion backend unchanged, pointed at the shipped folder; renders are
        # encoded at the model's own side (its draft preset's 256 would give latents four times
        # the side the UNet was trained on)
        registry.derive(
            "shapes-learned-sd",
            base="stable-diffusion",
            defaults={"model": str(SHAPES_LEARNED_SD), "background": _training_background(SHAPES_LEARNED_SD)},
            presets={"draft": {"guidance": {"resolution": None}}},
            description="A small Stable Diffusion 1.x model trained on the shapes world (stable-diffusion backend).",
            recipes=SHAPES_LEARNED_SD_RECIPES,
        )
    if (SHAPES_LEARNED_FLOW / "model_index.json").is_file():
        # the stable-diffusion-3 backend unchanged, pointed at the shipped folder: T5 dropped (the
        # folder has none; its tokens are zeros, as many as in training), renders encoded at the
        # model's own side (the draft preset's 256 is past the transformer's positional table)
        registry.derive(
            "shapes-learned-flow",
            base="stable-diffusion-3",
            defaults={
                "model": str(SHAPES_LEARNED_FLOW),
                "background": _training_background(SHAPES_LEARNED_FLOW),
                "drop_t5": True,
                "max_sequence_length": _t5_tokens(SHAPES_LEARNED_FLOW),
            },
            presets={"draft": {"guidance": {"resolution": None}}},
            description="A small Stable Diffusion 3 model trained on the shapes world (stable-diffusion-3 backend).",
            recipes=SHAPES_LEARNED_FLOW_RECIPES,
        )
