"""The `gaussians` generator on the `shapes` world (CPU): geometry against the exact ground truth.

For each object and seed, a run of the `gaussians` generator with the `shapes` prior; prints the
volumetric IoU and Chamfer distance of its density field at its surface level (what
`sds eval geometry` measures), the colour error, the wall and CPU time, and the number of
Gaussians over time (from metrics.jsonl). CPU time (user + system of this process) lets figures
measured on a busy machine be projected.

    python benchmarks/gaussians_shapes.py                                  # cube and sphere, seeds 0 and 1
    python benchmarks/gaussians_shapes.py --objects "a red cube" --seeds 0 --set generator.grad_threshold=0.02
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness

DEFAULT_OBJECTS = ("a red cube", "a green sphere")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def count_over_time(metrics: Path, every: int) -> list[tuple[int, int]]:
    """(step, Gaussian count) every `every` steps, from the run's metrics.jsonl."""
    rows = []
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if "gaussians" in record and (record["step"] % every == 0 or record["step"] == 1):
            rows.append((int(record["step"]), int(record["gaussians"])))
    return rows


def run_object(
    prompt: str, out: Path, preset: str, overrides: dict[str, Any], seed: int, device: str = "cpu"
) -> dict[str, Any]:
    from sds_core.config import deep_merge
    from sds_core.lifecycle import start_run
    from sds_shapes.metrics import evaluate

    overrides = deep_merge({"run": {"seed": seed, "preview_every": 0, "checkpoint_every": 0}}, overrides)
    overrides = deep_merge({"generator": {"export_formats": ["ply"]}}, overrides)
    names = {"generator": "gaussians", "guidance": "shapes"}
    trainer = start_run(prompt, out, preset=preset, overrides=overrides, names=names, device=device)
    gen = trainer.generator
    truth = trainer.guidance.ground_truth
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    trainer.run()
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    density, albedo, level = gen.density_field()
    metrics = evaluate(density, truth, albedo, threshold=level)
    return {
        "prompt": prompt,
        "seed": seed,
        **metrics,
        "level": level,
        "steps": trainer.step,
        "wall_s": wall,
        "cpu_s": cpu,
        "gaussians": gen.gaussians.count,
        "rasterizer": gen.rasterizer.name,
        "count_over_time": count_over_time(trainer.folder.metrics_path, max(trainer.step // 6, 1)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    harness.add_objects(parser, DEFAULT_OBJECTS, nargs="*")
    harness.add_seeds(parser, (0, 1))
    harness.add_preset_steps(parser)
    harness.add_device(parser, "cpu", help="cpu, or cuda (gsplat when installed)")
    harness.add_sets(parser)
    harness.add_outputs(parser, out=True)
    args = parser.parse_args(argv)

    overrides = harness.overrides(args)
    root = harness.run_root(args, "gaussians-shapes-")
    rows = []
    for prompt in args.objects:
        for seed in args.seeds:
            folder = root / f"{prompt.replace(' ', '-')}-seed{seed}"
            row = run_object(prompt, folder, args.preset, overrides, seed, args.device)
            rows.append(row)
            counts = " ".join(f"{s}:{n}" for s, n in row["count_over_time"])
            print(
                f"{prompt:16s} seed {seed}: IoU {row['iou']:.3f}  Chamfer {row['chamfer']:.4f}  "
                f"colour err {row['colour_error']:.3f}  Gaussians {row['gaussians']}  steps {row['steps']}  "
                f"wall {row['wall_s']:.0f}s  cpu {row['cpu_s']:.0f}s  count over time [{counts}]",
                flush=True,
            )
    harness.write_outputs(args, rows, args.device, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
