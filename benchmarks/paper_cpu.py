"""Why the paper's MLP field fails or succeeds on a CPU: one factor at a time, on the shapes world.

Each row is a `nerf` run of the `paper-cpu` preset (the paper's components sized for a 2-core
CPU: 16 x 16 renders, 32 samples a ray, schedules at the paper's fractions of a short run) with
one factor moved towards the draft preset (or back to the paper preset's size), on one object
with the camera-exact `shapes` prior and A.2's cameras. Printed per row: volumetric IoU at the
export level every --eval-every steps (and at the end), samples per ray over the second half of
the run, wall time, this process's CPU time and steps per second.

    python benchmarks/paper_cpu.py --rows base entropy --steps 300     # cube, seed 0
    python benchmarks/paper_cpu.py --side 16 --steps 200 --eval-every 25 --rows all   # the README's table
    python benchmarks/paper_cpu.py --rows all --objects "a blue cone" --json rows.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness

# one factor each, from paper-cpu towards the draft preset (or the paper preset's own size)
ROWS: dict[str, dict[str, Any]] = {
    "base": {},
    # the draft's entropy of the accumulated opacity (not in the paper), summed over pixels
    "entropy": {"generator": {"entropy_weight": 1000.0 / 1024}},
    # A.2's upper opacity weight
    "opacity 5e-3": {"generator": {"opacity_weight": 5e-3}},
    # the draft's constant learning rate instead of the paper's warm-up and cosine decay
    "constant lr": {"optim": {"schedule": "constant"}},
    # the draft's normals: finite differences, none on albedo renders (no orientation loss there)
    "draft normals": {
        "generator": {"normals": "finite_difference", "finite_difference_eps": 0.03, "orientation_on_albedo": False}
    },
    # the paper preset's initial density shift (-1; -3 in paper-cpu and the draft)
    "density bias -1": {"generator": {"density_bias": -1.0}},
    # the shading schedule off: albedo renders only (A.2: 75 % shaded after the first 1k steps)
    "albedo only": {"generator": {"shaded_probability": 0.0}},
    # no IPE anneal: the final Sigma from the first step
    "no IPE anneal": {"generator": {"ipe_anneal_steps": 0}},
    # dense sampling: no empty-space skipping
    "no skipping": {"generator": {"empty_space_skipping": False}},
}


def scaled(steps: int) -> dict[str, Any]:
    """The preset's run length and step-counted schedules at the paper's fractions (A.2: 15k
    steps; 3k warm-up; 1k albedo-only; 5k for the IPE and orientation anneals)."""
    return {
        "run": {"steps": steps},
        "optim": {"warmup_steps": steps // 5},
        "generator": {
            "albedo_only_steps": steps // 15,
            "ipe_anneal_steps": steps // 3,
            "orientation_anneal_steps": steps // 3,
        },
    }


def load_nerf_shapes() -> Any:
    return harness.load_script("nerf_shapes")


def run_row(
    nerf_shapes: Any, prompt: str, folder: Path, overrides: dict[str, Any], seed: int, eval_every: int
) -> dict[str, Any]:
    """One run with IoU at the export level every `eval_every` steps (on the CPU, no gradients)."""
    import torch

    from sds_shapes.metrics import volumetric_iou

    curve: list[tuple[int, float]] = []

    def on_step(trainer: Any, event: Any) -> None:
        if eval_every and event.step % eval_every == 0:
            gen = trainer.generator
            density, _, level = gen.density_field()
            with torch.no_grad():
                curve.append((event.step, volumetric_iou(density, trainer.guidance.ground_truth, threshold=level)))
            gen.train()

    cpu = time.process_time()
    row = nerf_shapes.run_object(prompt, folder, "paper-cpu", overrides, seed, on_step=on_step)
    row["iou_curve"] = curve
    row["cpu_s"] = time.process_time() - cpu
    return row


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--rows", nargs="+", default=["base", "entropy"], help=f"'all' or of: {', '.join(ROWS)}")
    harness.add_objects(parser, ["a green cube"])
    harness.add_seed(parser)
    harness.add_preset_steps(parser, preset=None, steps_help="run length (schedules at the paper's fractions)")
    parser.add_argument("--side", type=int, default=None, help="render and reference side (preset: 32)")
    parser.add_argument("--eval-every", type=int, default=100)
    harness.add_outputs(parser, json_help=None)
    args = parser.parse_args(argv)
    names = list(ROWS) if args.rows == ["all"] else args.rows
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; accepted: {', '.join(ROWS)}")
    nerf_shapes = load_nerf_shapes()
    from sds_core.config import deep_merge

    root = harness.run_root(args, "paper-cpu-")
    rows = []
    for name in names:
        overrides = ROWS[name]
        if args.steps is not None:
            overrides = deep_merge(scaled(args.steps), overrides)
        if args.side is not None:
            side = {"cameras": {"width": args.side, "height": args.side}, "guidance": {"resolution": args.side}}
            overrides = deep_merge(overrides, side)
        for prompt in args.objects:
            folder = root / f"{len(rows):02d}"
            row = {"row": name, **run_row(nerf_shapes, prompt, folder, overrides, args.seed, args.eval_every)}
            rows.append(row)
            curve = " ".join(f"{step}:{iou:.2f}" for step, iou in row["iou_curve"])
            print(
                f"{name:16s} {prompt:16s} IoU {row['iou']:.3f} [{curve}] "
                f"samples/ray {row['samples_per_ray_train']:.1f} wall {row['wall_s']:.0f}s cpu {row['cpu_s']:.0f}s "
                f"{row['it_per_s']:.2f} it/s",
                flush=True,
            )
    harness.write_outputs(args, rows, "cpu", __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
