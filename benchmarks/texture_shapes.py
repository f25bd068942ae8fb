"""The texture generator on the `shapes` world (CPU): each object's true mesh, textured under SDS.

For each object and seed: the object's true mesh is written by `python -m sds_shapes.true_mesh`'s
function (the cube as trimesh's 12-face box, curved shapes by marching cubes of the exact SDF),
then `sds generate PROMPT --generator texture --set generator.mesh=TRUE_MESH --guidance shapes
--preset draft` is run through `start_run`. Printed and recorded per run:
- geometry kept bit for bit: final/mesh.ply's vertices and faces equal the input file's as trimesh
  reads them, and final/mesh.glb's vertices are the input's (float32) along the atlas's mapping;
- the colour error (mean absolute RGB difference of the albedo at true surface points,
  `sds_shapes.metrics.colour_error`) of the texture, looked up at the nearest surface point;
  `sds eval geometry` reports the nearest-vertex colour (coarser on a mesh with few vertices);
- the nerf draft's colour error on the same object and seed, from benchmarks/results/nerf_shapes-draft.json
  (seed 0) and nerf_shapes-draft-seedN.json (seed N).

    python benchmarks/texture_shapes.py                                     # green cube, seeds 0 1
    python benchmarks/texture_shapes.py --objects "a red sphere" "a green cube" "a blue cone" \\
        "a yellow torus" --record benchmarks/results/texture_shapes-draft.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness

DEFAULT_OBJECTS = ("a green cube",)
RESULTS = Path(__file__).resolve().parent / "results"


def nerf_result(seed: int) -> Path:
    """The stored nerf draft of a seed: nerf_shapes-draft.json (seed 0), nerf_shapes-draft-seedN.json."""
    return RESULTS / ("nerf_shapes-draft.json" if seed == 0 else f"nerf_shapes-draft-seed{seed}.json")


def nerf_colour_errors(seed: int) -> dict[str, float]:
    """The stored nerf draft's colour error per prompt for that seed ({} when none is stored)."""
    path = nerf_result(seed)
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {row["prompt"]: row["colour_error"] for row in rows if "colour_error" in row}


def geometry_kept(mesh_file: Path, final: Path) -> dict[str, bool]:
    """The input file's vertices and faces against final/mesh.ply's and final/mesh.glb's, bit for bit."""
    import numpy as np
    import trimesh

    given = trimesh.load(mesh_file, force="mesh", process=False)
    ply = trimesh.load(final / "mesh.ply", force="mesh", process=False)
    glb = trimesh.load(final / "mesh.glb", force="mesh", process=False)
    v, f = np.asarray(given.vertices), np.asarray(given.faces)
    ply_same = np.array_equal(np.asarray(ply.vertices).view(np.uint64), v.view(np.uint64))
    ply_same &= np.array_equal(np.asarray(ply.faces), f)
    # a GLB holds float32 positions, split along the atlas's seams: compare the corners of each face
    glb_corners = np.asarray(glb.vertices, np.float32)[np.asarray(glb.faces)]
    glb_same = glb_corners.shape == (len(f), 3, 3)
    glb_same = glb_same and np.array_equal(glb_corners.view(np.uint32), v.astype(np.float32)[f].view(np.uint32))
    return {"ply_bit_for_bit": bool(ply_same), "glb_bit_for_bit": bool(glb_same)}


def run_object(prompt: str, out: Path, preset: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """Texture the true mesh of `prompt`'s object; geometry check and colour errors."""
    from sds_core.config import deep_merge
    from sds_core.lifecycle import start_run
    from sds_eval.geometry import run_geometry
    from sds_shapes.metrics import colour_error
    from sds_shapes.true_mesh import write_true_mesh

    out.mkdir(parents=True, exist_ok=True)
    mesh_file = write_true_mesh(prompt, out.parent / f"true-{prompt.replace(' ', '-')}.ply")
    patch = {"run": {"seed": seed}, "generator": {"mesh": str(mesh_file)}}
    overrides = deep_merge(patch, overrides)
    names = {"generator": "texture", "guidance": "shapes"}
    trainer = start_run(prompt, out / "run", preset=preset, overrides=overrides, names=names, device="cpu")
    gen = trainer.generator
    truth = trainer.guidance.ground_truth
    started = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - started
    kept = geometry_kept(mesh_file, out / "run" / "final")
    return {
        "prompt": prompt,
        "seed": seed,
        "faces": int(gen.faces.shape[0]),
        "texture_size": int(gen.cfg.texture_size),
        "atlas": gen.atlas,
        "colour_error": colour_error(gen.albedo_at, truth),
        "eval_colour_error": run_geometry(out / "run", resolution=32)["colour_error"],
        **kept,
        "steps": trainer.step,
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    harness.add_common_options(parser, objects=DEFAULT_OBJECTS, seeds=(0, 1), device=None)
    args = parser.parse_args(argv)
    overrides = harness.overrides(args)
    root = harness.run_root(args, "texture-shapes-")
    rows = []
    for prompt in args.objects:
        for seed in args.seeds:
            row = run_object(prompt, root / f"{prompt.replace(' ', '-')}-seed{seed}", args.preset, overrides, seed)
            nerf = nerf_colour_errors(seed)  # the nerf draft of the same seed
            row["nerf_draft_colour_error"] = nerf.get(prompt)
            row["at_most_nerf"] = None if prompt not in nerf else row["colour_error"] <= nerf[prompt]
            rows.append(row)
            print(
                f"{prompt:16s} seed {seed}: colour err {row['colour_error']:.4f} (nerf draft "
                f"{row['nerf_draft_colour_error']}, eval nearest-vertex {row['eval_colour_error']:.4f})  "
                f"geometry kept ply {row['ply_bit_for_bit']} glb {row['glb_bit_for_bit']}  faces {row['faces']}  "
                f"wall {row['wall_s']:.0f}s",
                flush=True,
            )
    harness.write_outputs(args, rows, "cpu", __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
