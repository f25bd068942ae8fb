"""Image-to-3D of the shapes world (`sds generate --image`), scored against the true objects (CPU).

For each object, one exact render of it (albedo, on the model's training background, at
`--resolution` px) from the reference camera of `shapes-zero123`: its front (azimuth 0), at
`--elevation` (inside A.2's -10 to 90 deg), at the guidance's reference distance and field of view
(A.2's middle ones: `sds_shapes_learned.plugin`). Then `sds generate PROMPT --image RENDER
--guidance shapes-zero123` on each generator and seed, draft preset (the prompt names the true
object for `sds eval geometry`; the prior reads none), and `sds eval geometry`: IoU, the cube's
yaw-free IoU (the best over turns about z: with one image, the plain IoU should be as good, the
image fixing the yaw), Chamfer distance and colour error.

`--model` runs another Zero-1-to-3 format folder (an intermediate export) under the same
registration (`--set guidance.model=FOLDER`).

    python benchmarks/image_shapes.py --seeds 0 1 --jobs 2 --record benchmarks/results/image_shapes-zero123-nerf.json
    python benchmarks/image_shapes.py --model runs/shapes-zero123/export --objects "a red cube" --seeds 0
    python benchmarks/image_shapes.py --objects "a red cube" --seeds 0 --lambda-sds 0.1 10 100   # the prior's weight
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "packages/sds-shapes-learned/src/sds_shapes_learned/models/shapes-zero123"
OBJECTS = ("a red sphere", "a red cube", "a red cone", "a red torus")
ELEVATION = 15.0  # the reference render's elevation, degrees (inside A.2's -10 to 90)


def reference_render(prompt: str, elevation: float, resolution: int, background: tuple[float, float, float]) -> Any:
    """(3, H, W) in [0, 1]: the exact albedo render of the object `prompt` names from the front at
    `elevation`, at shapes-zero123's reference distance and field of view (2 x 2 supersampled, as
    its training renders)."""
    import torch

    from sds_core.config import CameraConfig
    from sds_core.reference import reference_camera
    from sds_core.reference_options import ReferenceOptions
    from sds_shapes.render import compose, trace_buffers
    from sds_shapes.world import parse_prompt, world_primitives
    from sds_shapes_learned.plugin import SHAPES_ZERO123_DISTANCE, SHAPES_ZERO123_FOV

    obj = parse_prompt(prompt).obj
    options = ReferenceOptions(
        reference_elevation=elevation, reference_distance=SHAPES_ZERO123_DISTANCE, reference_fov=SHAPES_ZERO123_FOV
    )
    camera = reference_camera(options, CameraConfig(width=resolution, height=resolution))
    primitives = world_primitives(obj)
    coverage, lit = trace_buffers(camera, supersample=2, primitives=primitives)
    one = primitives.index(obj.primitive)
    albedo = torch.tensor(obj.rgb).view(1, 3)
    return compose(coverage[one : one + 1], lit[one : one + 1], "albedo", albedo, torch.tensor(background))[0, 0, 0]


def write_png(image: Any, path: Path) -> Path:
    """An 8-bit RGB PNG of (3, H, W) in [0, 1]."""
    from PIL import Image

    pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(pixels, mode="RGB").save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--model", type=Path, default=SHIPPED, help="a Zero-1-to-3 format folder (default: shipped)")
    harness.add_objects(parser, OBJECTS)
    parser.add_argument("--elevation", type=float, default=ELEVATION, help="the reference render's elevation, degrees")
    parser.add_argument("--resolution", type=int, default=64, help="the reference render's side (the model's 64)")
    parser.add_argument("--generators", nargs="+", default=["nerf"])
    harness.add_seeds(parser, (0, 1), nargs="+")
    parser.add_argument(
        "--lambda-sds",
        type=float,
        nargs="+",
        default=[None],
        help="the prior's weights to run each object at (default: the registration's)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one thread each)")
    harness.add_sets(parser, help="extra sds generate --set for every run")
    harness.add_outputs(parser, out=True)
    args = parser.parse_args(argv)
    harness.parse_sets(args.set)  # checked as sds generate --set checks them, before minutes of work
    if not (args.model / "model_index.json").is_file():
        print(f"error: {args.model} is not a model folder (no model_index.json)", file=sys.stderr)
        return 2
    from sds_shapes_learned.plugin import SHAPES_ZERO123_LAMBDA_SDS

    learned = harness.load_script("learned_shapes")
    cfg = learned._training_config(args.model)
    step = json.loads((args.model / "training.json").read_text())["step"]
    print(f"model {args.model} (step {step}); references at elevation {args.elevation:g} deg, {args.resolution} px")
    extra = [a for s in args.set for a in ("--set", s)]
    root = harness.run_root(args, "sds-image-shapes-")  # --out keeps the renders and run folders
    root.mkdir(parents=True, exist_ok=True)
    images = {}
    for prompt in args.objects:
        image = reference_render(prompt, args.elevation, args.resolution, tuple(cfg.background))
        images[prompt] = write_png(image, root / f"{prompt.replace(' ', '-')}.png")
    guidance = ["--guidance", "shapes-zero123", "--set", f"guidance.model={args.model.resolve()}"]
    guidance += ["--set", f"guidance.reference_elevation={args.elevation}"]

    def run(job: tuple[str, str, int, float | None]) -> dict[str, Any]:
        generator, prompt, seed, weight = job
        out = root / f"{generator}-{prompt.replace(' ', '-')}-{seed}-{weight}"
        row: dict[str, Any] = {"model": args.model.name, "step": step, "generator": generator}
        row.update({"prompt": prompt, "seed": seed, "elevation": args.elevation})
        image = ["--image", str(images[prompt])]
        if weight is not None:
            image += ["--set", f"guidance.lambda_sds={weight}"]
        row["lambda_sds"] = weight if weight is not None else SHAPES_ZERO123_LAMBDA_SDS
        row.update(learned.sds_geometry(prompt, generator, [*guidance, *image], seed, out, extra))
        turned = f" (yaw-free {row['iou_yaw_free']:.3f} at {row['yaw_degrees']:g} deg)"
        print(
            f"image-to-3D {generator:<9} {prompt:<14} seed {seed} lambda_sds {row['lambda_sds']:g}: "
            f"IoU {row['iou']:.3f}"
            f"{turned if row['yaw_degrees'] else ''} Chamfer {row['chamfer']:.4f} colour error "
            f"{row['colour_error']:.3f} ({row['wall_s']} s)",
            flush=True,
        )
        return row

    jobs = [(g, p, s, w) for g in args.generators for p in args.objects for s in args.seeds for w in args.lambda_sds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # one CPU thread each (sds_geometry)
        rows = list(pool.map(run, jobs))
    harness.write_outputs(args, rows, "cpu", __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
