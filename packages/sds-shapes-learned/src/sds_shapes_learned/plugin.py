"""Registers `shapes-learned` (IF format), `shapes-learned-sd` (Stable Diffusion format),
`shapes-learned-flow` (Stable Diffusion 3 format) and `shapes-zero123` (Zero-1-to-3 format) when their
weights are shipped (entry point
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
# the Zero-1-to-3 format model trained on pairs of views of the same objects (`--format zero123`)
SHAPES_ZERO123 = Path(__file__).parent / "models" / "shapes-zero123"


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


# The zero123 backend's recipe (sds-guidance ZERO123_RECIPES, which a derived guidance does not
# inherit): every 3D generator stays on albedo for the run, as threestudio's zero123 config
# (`ambient_only_steps: 100000`), so that the reference view's render is comparable with the image
SHAPES_ZERO123_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    name: {"default": {"generator": {"albedo_only_steps": 100_000}}} for name in ("nerf", "mesh", "gaussians")
}
# The camera of shapes-zero123's reference images and novel views: A.2's mid distance (1.0-1.5)
# and mid focal length (0.7-1.35 of the width, 1.025: a vertical field of view of
# 2 atan(0.5 / 1.025) = 52.0 deg), inside the distribution its pairs were drawn from, where the
# zero123 backend's defaults (DreamGaussian's radius 2 and fovy 49.1) are outside it. The images
# it takes are renders at that camera, so they are not recentred (recenter_border 0).
SHAPES_ZERO123_DISTANCE = 1.25
SHAPES_ZERO123_FOCAL = 1.025
SHAPES_ZERO123_FOV = 52.0
# The prior's weight against the reference-view terms (the backend's 0.1 is threestudio's, for
# Zero-1-to-3 XL's 32 x 32 x 4 latents; this model's are 8 x 8 x 4, a sixteenth of the elements of
# the summed SDS loss): measured on the cube (benchmarks/results/image_shapes-zero123-lambda.json),
# at 0.1 the reference terms alone shape the object (a plate by the reference camera, IoU as with
# no prior); 100 lifts it
SHAPES_ZERO123_LAMBDA_SDS = 100.0


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


def _derive_shipped(
    registry: Registry,
    name: str,
    folder: Path,
    base: str,
    description: str,
    recipes: dict[str, dict[str, dict[str, Any]]],
    defaults: dict[str, Any] | None = None,
    presets: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Register the model shipped in `folder` as `name`: the backend `base`,
    unchanged, pointed at the folder with the backdrop of its training renders declared (as the
    exact prior declares its own), when the folder is present; `defaults`: the backend's other
    options this model needs."""
    if not (folder / "model_index.json").is_file():
        return
    registry.derive(
        name,
        base=base,
        defaults={"model": str(folder), "background": _training_background(folder), **(defaults or {})},
        presets=presets,
        description=description,
        recipes=recipes,
    )


@hookimpl
def sds_register_guidance(registry: Registry) -> None:
    _derive_shipped(
        registry,
        "shapes-learned",
        SHAPES_LEARNED,
        "deepfloyd-if",
        "A small DeepFloyd IF stage-I model trained on the shapes world (deepfloyd-if backend).",
        SHAPES_LEARNED_RECIPES,
    )
    # renders are encoded at the model's own side (the stable-diffusion draft preset's 256 would
    # give latents four times the side the UNet was trained on)
    _derive_shipped(
        registry,
        "shapes-learned-sd",
        SHAPES_LEARNED_SD,
        "stable-diffusion",
        "A small Stable Diffusion 1.x model trained on the shapes world (stable-diffusion backend).",
        SHAPES_LEARNED_SD_RECIPES,
        presets={"draft": {"guidance": {"resolution": None}}},
    )
    # T5 dropped (the folder has none; its tokens are zeros, as many as in training), renders
    # encoded at the model's own side (the draft preset's 256 is past the transformer's positional table)
    _derive_shipped(
        registry,
        "shapes-learned-flow",
        SHAPES_LEARNED_FLOW,
        "stable-diffusion-3",
        "A small Stable Diffusion 3 model trained on the shapes world (stable-diffusion-3 backend).",
        SHAPES_LEARNED_FLOW_RECIPES,
        defaults={"drop_t5": True, "max_sequence_length": _t5_tokens(SHAPES_LEARNED_FLOW)},
        presets={"draft": {"guidance": {"resolution": None}}},
    )
    # the reference camera and novel views inside its training cameras (A.2's)
    _derive_shipped(
        registry,
        "shapes-zero123",
        SHAPES_ZERO123,
        "zero123",
        "A small Zero-1-to-3 model trained on views of the shapes world (zero123 backend).",
        SHAPES_ZERO123_RECIPES,
        defaults={
            "reference_distance": SHAPES_ZERO123_DISTANCE,
            "reference_fov": SHAPES_ZERO123_FOV,
            "recenter_border": 0.0,
            "lambda_sds": SHAPES_ZERO123_LAMBDA_SDS,
        },
        presets={
            "default": {
                "cameras": {
                    "distance_range": [SHAPES_ZERO123_DISTANCE, SHAPES_ZERO123_DISTANCE],
                    "focal_range": [SHAPES_ZERO123_FOCAL, SHAPES_ZERO123_FOCAL],
                }
            }
        },
    )
