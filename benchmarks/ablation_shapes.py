"""DreamFusion's Figure-6 ablation on the `shapes` world, where the answer is known.

The paper adds, one at a time: view-dependent prompts, lighting (shaded renders), textureless
shading, and reports that each step improves geometry. Here each row is a `nerf` run of the draft
preset (A.2's cameras, the camera-exact prior) on each object, with
- base: albedo renders only, and a prior blind to the view: the conditional references are the
  object from 7 azimuths evenly around the render's camera (every 51 deg), as a prompt without a
  view names no side;
- + view-dependent prompts: the references within +-30 deg of the render's view (the default);
- + lighting: after the albedo-only steps, 75 % of renders Lambertian-shaded (A.2), none textureless;
- + textureless: half of the shaded renders textureless (A.2, the default).
Measured: volumetric IoU at the export level, and the textureless-render error, the mean absolute
difference between the run's textureless renders and the true object's (8 views around it at 15
deg elevation, 64 x 64, white background), which measures geometry as shading reveals it.

    python benchmarks/ablation_shapes.py                               # cube and torus, seed 0
    python benchmarks/ablation_shapes.py --objects "a blue cone" --seed 1 --json ablation.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness

STEPS: dict[str, dict[str, Any]] = {
    "base": {
        "guidance": {"window_degrees": 180.0 * 6 / 7},  # 7 azimuths evenly around the circle
        "generator": {"shaded_probability": 0.0},
    },
    "+ view-dependent prompts": {"generator": {"shaded_probability": 0.0}},
    "+ lighting": {"generator": {"textureless_probability": 0.0}},
    "+ textureless": {},
}


def textureless_error(trainer: Any, views: int = 8, side: int = 64) -> dict[str, Any]:
    """Mean |run - truth| over textureless renders of both from an orbit around the object."""
    import torch

    from sds_shapes.render import compose, trace_buffers
    from sds_shapes.world import PRIMITIVES

    cams = trainer.cameras.orbit(views, elevation=15.0, width=side, height=side)
    gen = trainer.generator
    gen.eval()
    image, _ = gen.render_chunked(cams.to(trainer.device), "textureless")
    truth = trainer.guidance.ground_truth
    coverage, lit = trace_buffers(cams, supersample=1, primitives=(truth.primitive,))
    background = torch.tensor(trainer.guidance.background)
    expected = compose(coverage, lit, "textureless", None, background)[0, 0]  # (V, 3, H, W)
    assert truth.primitive in PRIMITIVES
    return {"textureless_error": float((image.cpu() - expected).abs().mean())}


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    harness.add_objects(parser, ["a green cube", "a yellow torus"])
    harness.add_seed(parser)
    harness.add_preset_steps(parser, preset=None)
    harness.add_outputs(parser, json_help=None)
    args = parser.parse_args(argv)
    nerf_shapes = harness.load_script("nerf_shapes")
    from sds_core.config import deep_merge

    root = harness.run_root(args, "ablation-")
    rows = []
    for name, overrides in STEPS.items():
        if args.steps is not None:
            overrides = deep_merge(overrides, {"run": {"steps": args.steps}})
        for index, prompt in enumerate(args.objects):
            folder = root / f"{len(rows):02d}-{index}"
            row = nerf_shapes.run_object(prompt, folder, "draft", overrides, args.seed, measure=textureless_error)
            row["step"] = name
            rows.append(row)
            print(
                f"{name:26s} {prompt:16s} IoU {row['iou']:.3f} textureless error {row['textureless_error']:.4f} "
                f"Chamfer {row['chamfer']:.4f} wall {row['wall_s']:.0f}s",
                flush=True,
            )
    harness.write_outputs(args, rows, "cpu", __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
