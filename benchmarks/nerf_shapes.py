"""The NeRF generator on the `shapes` world (CPU): geometry against the exact ground truth.

For each object, a run of the `nerf` generator with the `shapes` prior at a fixed seed, then:
IoU and Chamfer distance to the true shape (sds_guidance.shapes.metrics) with occupancy defined
by the same density level that mesh export uses, wall time, the mean per-step time split from
metrics.jsonl, and samples per ray with and without empty-space skipping.

    python benchmarks/nerf_shapes.py                       # sphere, cube, cone, torus (draft)
    python benchmarks/nerf_shapes.py --objects "a red cube" --steps 300 --set generator.hidden=64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_OBJECTS = ("a red sphere", "a green cube", "a blue cone", "a yellow torus")
TIMES = ("time_render", "time_guidance", "time_backward", "time_optimizer")


def run_object(prompt: str, out: Path, preset: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train, then measure; returns one result row."""
    import torch

    from sds_core.config import deep_merge
    from sds_core.loop import start_run
    from sds_guidance.shapes.metrics import evaluate, volumetric_iou
    from sds_nerf.sampling import density_threshold

    overrides = deep_merge({"run": {"seed": seed, "preview_every": 0, "checkpoint_every": 0}}, overrides)
    overrides = deep_merge({"generator": {"export_formats": ["ply"]}}, overrides)
    trainer = start_run(prompt, out, preset=preset, overrides=overrides, device="cpu")
    started = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - started
    gen = trainer.generator
    level = gen.surface_level()  # the level mesh export uses (sds export --threshold overrides it)
    gen.eval()
    truth = trainer.guidance.ground_truth
    metrics = evaluate(gen.field.density, truth, lambda p: gen.field(p)[1], threshold=level)
    # for context only: IoU at other opacity levels per render step (tau = -ln(1 - alpha) / delta)
    iou_at = {
        alpha: volumetric_iou(gen.field.density, truth, threshold=density_threshold(alpha, gen.step_size))
        for alpha in (0.2, 0.5, 0.8)
    }
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    split = {k.removeprefix("time_"): statistics.mean(r[k] for r in records) for k in TIMES}
    # samples per ray while training, as the loop logged them (render.aux["log"])
    logged = [r["samples_per_ray"] for r in records if "samples_per_ray" in r]
    train_samples = statistics.mean(logged[len(logged) // 2 :]) if logged else float("nan")
    # samples per ray on training-distribution views, with the final occupancy grid and without
    torch.manual_seed(seed)
    cams = trainer.cameras.sample(8)
    gen.train()
    with torch.no_grad():
        gen.render_views(cams, ["albedo"] * 8, skipping=True)
        with_skip = gen.last_stats["samples_per_ray"]
        gen.render_views(cams, ["albedo"] * 8, skipping=False)
        without_skip = gen.last_stats["samples_per_ray"]
    return {
        "prompt": prompt,
        "iou": metrics["iou"],
        "chamfer": metrics["chamfer"],
        "colour_error": metrics.get("colour_error", float("nan")),
        "level": level,
        "alpha": gen.cfg.mesh_alpha if gen.cfg.mesh_threshold is None else None,
        "iou_at_alpha": iou_at,
        "samples_per_ray_train": train_samples,
        "steps": trainer.step,
        "wall_s": wall,
        "split_s": split,
        "samples_per_ray_skip": with_skip,
        "samples_per_ray_dense": without_skip,
        "occupied_fraction": gen.grid.occupied_fraction(),
    }


def format_row(row: dict[str, Any]) -> str:
    split = " ".join(f"{k} {v * 1000:.0f}ms" for k, v in row["split_s"].items())
    level = f"tau>{row['level']:.3g}" + (f" (alpha {row['alpha']:g} per step)" if row["alpha"] is not None else "")
    others = " ".join(f"{a:g}:{v:.2f}" for a, v in row["iou_at_alpha"].items())
    return (
        f"{row['prompt']:16s} IoU {row['iou']:.3f} Chamfer {row['chamfer']:.4f} colour err {row['colour_error']:.3f} "
        f"level {level} [IoU at alpha {others}] steps {row['steps']} wall {row['wall_s']:.0f}s | "
        f"per step: {split} | samples/ray: train {row['samples_per_ray_train']:.1f}, final grid "
        f"{row['samples_per_ray_skip']:.1f} skip / {row['samples_per_ray_dense']:.1f} dense, "
        f"occupied {row['occupied_fraction']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", nargs="+", default=list(DEFAULT_OBJECTS))
    parser.add_argument("--preset", default="draft")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="key.path=value, as sds generate --set")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)

    from sds_core.config import deep_merge, parse_sets

    overrides = parse_sets(args.set)
    if args.steps is not None:
        overrides = deep_merge(overrides, {"run": {"steps": args.steps}})
    root = args.out or Path(tempfile.mkdtemp(prefix="nerf-shapes-"))
    rows = []
    for index, prompt in enumerate(args.objects):
        row = run_object(prompt, root / f"{index:02d}-{prompt.replace(' ', '-')}", args.preset, overrides, args.seed)
        rows.append(row)
        print(format_row(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
