"""The mesh generator on the `shapes` world (CPU): geometry against the exact ground truth.

1. From an icosphere: for each object, a run of the `mesh` generator with the `shapes` prior at a
   fixed seed; prints the IoU and Chamfer distance (sds_shapes.metrics on the trimesh
   mesh) of the template and of the result, the colour error and the wall time.
2. Refining NeRF runs (Magic3D's second stage): for each `--nerf-run RUN_DIR` (a finished `nerf`
   run with final/mesh.ply or mesh.glb), or with `--refine` for a `nerf` draft run of each object
   trained first, the IoU of the NeRF's mesh and of the mesh generator started from it
   (`generator.init=RUN_DIR`, the same preset; vertices move at optim.lr x generator.refine_lr_scale).

    python benchmarks/mesh_shapes.py                                  # cube and sphere (draft)
    python benchmarks/mesh_shapes.py --refine                         # + NeRF runs, then refined
    python benchmarks/mesh_shapes.py --nerf-run runs/a-green-cube --objects
    python benchmarks/mesh_shapes.py --objects "a red cube" --set generator.smoothness=50
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness

DEFAULT_OBJECTS = ("a red cube", "a green sphere")


def world_mesh(vertices: Any, faces: Any) -> Any:
    import trimesh

    return trimesh.Trimesh(vertices, faces, process=False)


def run_object(prompt: str, out: Path, preset: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train the mesh generator on `prompt`; IoU of its starting and final mesh."""
    from sds_3d.surface import VertexColorField
    from sds_core.config import deep_merge
    from sds_core.lifecycle import start_run
    from sds_shapes.metrics import evaluate

    overrides = deep_merge({"run": {"seed": seed, "preview_every": 0, "checkpoint_every": 0}}, overrides)
    overrides = deep_merge({"generator": {"export_formats": ["ply"]}}, overrides)
    names = {"generator": "mesh", "guidance": "shapes"}
    trainer = start_run(prompt, out, preset=preset, overrides=overrides, names=names, device="cpu")
    gen = trainer.generator
    truth = trainer.guidance.ground_truth  # a property of the shapes guidance
    faces = gen.faces.cpu().numpy()
    start = evaluate(world_mesh(gen.base_vertices.cpu().numpy(), faces), truth)
    started = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - started
    verts = gen.vertices().detach().cpu().numpy()
    colour = VertexColorField(verts, faces, gen.colors().detach().cpu().numpy())
    final = evaluate(world_mesh(verts, faces), truth, colour)
    return {
        "prompt": prompt,
        "init": gen.cfg.init,
        "iou_start": start["iou"],
        "chamfer_start": start["chamfer"],
        "iou": final["iou"],
        "chamfer": final["chamfer"],
        "colour_error": final["colour_error"],
        "steps": trainer.step,
        "wall_s": wall,
        "faces": len(faces),
    }


def train_nerf(prompt: str, out: Path, seed: int) -> Path:
    """A `nerf` draft run of `prompt` with the shapes prior; its final/mesh.ply starts a refinement."""
    from sds_core.lifecycle import start_run

    overrides: dict[str, Any] = {
        "run": {"seed": seed, "preview_every": 0, "checkpoint_every": 0},
        "generator": {"export_formats": ["ply"]},
    }
    names = {"generator": "nerf", "guidance": "shapes"}
    started = time.perf_counter()
    start_run(prompt, out, preset="draft", overrides=overrides, names=names, device="cpu").run()
    print(f"{prompt:16s} nerf draft run in {time.perf_counter() - started:.0f}s -> {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    harness.add_objects(parser, DEFAULT_OBJECTS, nargs="*")
    parser.add_argument("--nerf-run", action="append", default=[], type=Path, help="a NeRF run folder to refine")
    harness.add_preset_steps(parser)
    parser.add_argument("--refine", action="store_true", help="train a nerf draft run of each object and refine it")
    parser.add_argument("--refine-steps", type=int, default=400, help="steps when refining a NeRF mesh")
    harness.add_seed(parser)
    harness.add_sets(parser)
    harness.add_outputs(parser, out=True)
    args = parser.parse_args(argv)

    from sds_core.config import deep_merge

    overrides = harness.overrides(args)
    root = harness.run_root(args, "mesh-shapes-")
    rows = []
    jobs: list[tuple[str, dict[str, Any], str]] = [(p, overrides, p.replace(" ", "-")) for p in args.objects]
    nerf_runs = list(args.nerf_run)
    if args.refine:
        for prompt in args.objects:
            nerf_runs.append(train_nerf(prompt, root / f"nerf-{prompt.replace(' ', '-')}", args.seed))
    for run in nerf_runs:
        record = json.loads((run / "config.json").read_text())
        refine = deep_merge({"run": {"steps": args.refine_steps}}, overrides)
        refine = deep_merge(refine, {"generator": {"init": str(run)}})
        jobs.append((record["prompt"], refine, f"refine-{run.name}"))
    for index, (prompt, patch, name) in enumerate(jobs):
        row = run_object(prompt, root / f"{index:02d}-{name}", args.preset, patch, args.seed)
        rows.append(row)
        start = "icosphere" if row["init"] == "icosphere" else f"NeRF mesh {row['init']}"
        print(
            f"{prompt:16s} from {start}: IoU {row['iou_start']:.3f} -> {row['iou']:.3f}  "
            f"Chamfer {row['chamfer_start']:.4f} -> {row['chamfer']:.4f}  colour err {row['colour_error']:.3f}  "
            f"faces {row['faces']}  steps {row['steps']}  wall {row['wall_s']:.0f}s",
            flush=True,
        )
    harness.write_outputs(args, rows, "cpu", __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
