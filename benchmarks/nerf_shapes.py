"""The NeRF generator on the `shapes` world (CPU): geometry against the exact ground truth.

For each object, a run of the `nerf` generator with the `shapes` prior at a fixed seed, then:
IoU and Chamfer distance to the true shape (sds_shapes.metrics) with occupancy defined
by the same density level that mesh export uses, wall time, the mean per-step time split from
metrics.jsonl, and samples per ray with and without empty-space skipping.

    python benchmarks/nerf_shapes.py                       # sphere, cube, cone, torus (draft)
    python benchmarks/nerf_shapes.py --objects "a red cube" --steps 300 --set generator.hidden=64
    python benchmarks/nerf_shapes.py --device cuda --preset paper --objects "a red cube" --steps 400 \
        --set optim.schedule=constant     # the MLP field on a GPU (nerfacc's sampler)
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness

DEFAULT_OBJECTS = ("a red sphere", "a green cube", "a blue cone", "a yellow torus")
TIMES = ("time_render", "time_guidance", "time_backward", "time_optimizer")


def run_object(
    prompt: str,
    out: Path,
    preset: str,
    overrides: dict[str, Any],
    seed: int,
    device: str = "cpu",
    measure: Callable[[Any], dict[str, Any]] | None = None,
    on_step: Callable[[Any, Any], None] | None = None,
) -> dict[str, Any]:
    """Train, then measure; returns one result row (with `measure(trainer)`'s entries when given).
    `on_step(trainer, event)` is called after every step while training."""
    import torch

    from sds_core.config import deep_merge
    from sds_core.events import StepFinished
    from sds_core.lifecycle import start_run
    from sds_nerf.generator import camera_rays
    from sds_nerf.sampling import density_threshold
    from sds_shapes.metrics import evaluate, volumetric_iou

    overrides = deep_merge({"run": {"seed": seed, "preview_every": 0, "checkpoint_every": 0}}, overrides)
    overrides = deep_merge({"generator": {"export_formats": ["ply"]}}, overrides)
    train_s: list[float] = []

    def listener(event: Any) -> None:
        if isinstance(event, StepFinished):
            train_s.append(event.elapsed)  # seconds since the run started, export excluded
            if on_step is not None:
                on_step(trainer, event)

    trainer = start_run(prompt, out, preset, overrides, {"generator": "nerf", "guidance": "shapes"}, device, [listener])
    started = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - started
    gen = trainer.generator
    where = trainer.device
    # callables on CPU points, evaluated where the field lives, and the level mesh export uses
    density, albedo, level = gen.density_field()
    gen.eval()
    truth = trainer.guidance.ground_truth
    metrics = evaluate(density, truth, albedo, threshold=level)
    # for context only: IoU at other opacity levels per render step (tau = -ln(1 - alpha) / delta)
    iou_at = {
        alpha: volumetric_iou(density, truth, threshold=density_threshold(alpha, gen.step_size))
        for alpha in (0.2, 0.5, 0.8)
    }
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    split = {k.removeprefix("time_"): statistics.mean(r[k] for r in records) for k in TIMES}
    # samples per ray while training, as the loop logged them (render.aux["log"])
    logged = [r["samples_per_ray"] for r in records if "samples_per_ray" in r]
    train_samples = statistics.mean(logged[len(logged) // 2 :]) if logged else float("nan")
    # samples per ray on training-distribution views (stratified, as in training), with the final
    # occupancy grid and without: the sampler alone, as render_views counts them (a full render of
    # 8 views with autograd normals holds the double-backward graph of every sample at once)
    torch.manual_seed(seed)
    rays = camera_rays(trainer.cameras.sample(8).to(where))
    gen.train()
    estimator = gen.nerfacc.estimator if gen.nerfacc is not None else None
    with torch.no_grad():
        with_skip = gen.sample(rays, skipping=True).evaluated() / rays.origins.shape[0]
        # nerfacc marches only through the occupied cells of its estimator even without sigma_fn:
        # mark every cell occupied for the dense count, then put the grid back
        binaries = estimator.binaries.clone() if estimator is not None else None
        if estimator is not None:
            estimator.binaries.fill_(True)
        without_skip = gen.sample(rays, skipping=False).evaluated() / rays.origins.shape[0]
        if estimator is not None:
            estimator.binaries.copy_(binaries)
    occupied = float(estimator.binaries.float().mean()) if estimator is not None else gen.grid.occupied_fraction()
    steps_done = len(train_s)
    extra = measure(trainer) if measure is not None else {}
    return {
        **extra,
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
        "occupied_fraction": occupied,
        "device": str(where),
        "sampler": "nerfacc" if estimator is not None else "torch",
        "it_per_s": steps_done / train_s[-1] if steps_done and train_s[-1] > 0 else float("nan"),
    }


def format_row(row: dict[str, Any]) -> str:
    split = " ".join(f"{k} {v * 1000:.0f}ms" for k, v in row["split_s"].items())
    level = f"tau>{row['level']:.3g}" + (f" (alpha {row['alpha']:g} per step)" if row["alpha"] is not None else "")
    others = " ".join(f"{a:g}:{v:.2f}" for a, v in row["iou_at_alpha"].items())
    return (
        f"{row['prompt']:16s} IoU {row['iou']:.3f} Chamfer {row['chamfer']:.4f} colour err {row['colour_error']:.3f} "
        f"level {level} [IoU at alpha {others}] steps {row['steps']} wall {row['wall_s']:.0f}s "
        f"({row['it_per_s']:.1f} it/s on {row['device']}, {row['sampler']} sampler) | "
        f"per step: {split} | samples/ray: train {row['samples_per_ray_train']:.1f}, final grid "
        f"{row['samples_per_ray_skip']:.1f} skip / {row['samples_per_ray_dense']:.1f} dense, "
        f"occupied {row['occupied_fraction']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    harness.add_common_options(
        parser, objects=DEFAULT_OBJECTS, device_help="cpu (default), cuda or auto, as sds generate --device"
    )
    args = parser.parse_args(argv)

    overrides = harness.overrides(args)
    root = harness.run_root(args, "nerf-shapes-")
    rows = []
    for index, prompt in enumerate(args.objects):
        folder = root / f"{index:02d}-{prompt.replace(' ', '-')}"
        row = run_object(prompt, folder, args.preset, overrides, args.seed, device=args.device)
        rows.append(row)
        print(format_row(row), flush=True)
    harness.write_outputs(args, rows, args.device, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
