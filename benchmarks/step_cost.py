"""The cost of a full SDS step against the prior's own cost, per generator, in one process.

The prior's own cost is the floor every SDS step pays (docs/design.md, "GPU and CPU"): the UNet at
batch 2B (classifier-free guidance: conditional + unconditional) plus, for Stable Diffusion fed
RGB renders, the VAE encoder forward and backward at the guidance's resolution; DeepFloyd IF pays
the UNet pair only. The full step is the training loop's own (`Trainer.train_step`: cameras,
render, prepare, loss, regularisers, backward, optimiser) with the same guidance object, so the
ratio step / prior is what a generator adds. Generators: the paper's NeRF (MLP on IPE, autograd
normals), the NeRF on a hash grid (a small MLP, finite-difference normals: threestudio's choice),
the mesh, the 3D Gaussians and the image (RGB pixels, so that the VAE runs as for a 3D render).

The model is a diffusers folder or hub id (--model), else the published architecture built from
tests/fixtures/configs with random weights (the cost does not depend on the weights): made small
on the CPU (--size tiny, the default there), at its published sizes on CUDA (--size full). The
sizes are the paper's on CUDA (64 x 64 renders, 64 samples a ray) and small on the CPU, so that a
test runs this in seconds.

    python benchmarks/step_cost.py                                     # CPU, tiny SD 2.1-base
    python benchmarks/step_cost.py --device cuda --steps 10 --warmup 3   # SD 2.1-base sizes, fp16
    python benchmarks/step_cost.py --device cuda --compile off --generators nerf-hashgrid
    python benchmarks/step_cost.py --device cuda --model /models/stable-diffusion-2-1-base
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness

ROOT = Path(__file__).resolve().parents[1]
GUIDANCE_MODELS = {"stable-diffusion": "sd21-base", "deepfloyd-if": "if-i-xl"}  # tests/fixtures/configs

# name: (generator plugin, its options); `small` adds what makes a CPU run take seconds
GENERATORS: dict[str, tuple[str, dict[str, Any]]] = {
    "nerf-mlp": ("nerf", {"encoding": "ipe"}),  # the paper's field (A.2), preset "paper"
    "nerf-hashgrid": (
        "nerf",
        {"encoding": "hashgrid", "hidden": 64, "blocks": 1, "normals": "finite_difference"},
    ),
    "mesh": ("mesh", {}),
    "gaussians": ("gaussians", {}),
    "image": ("image", {"space": "rgb"}),
}
SMALL: dict[str, dict[str, Any]] = {
    "nerf-mlp": {"hidden": 32, "blocks": 2, "samples_per_ray": 16},
    "nerf-hashgrid": {"hash_levels": 8, "hash_log2_size": 14, "hash_max_resolution": 256, "samples_per_ray": 16},
    "mesh": {"subdivisions": 2},
    "gaussians": {},
    "image": {},
}


def model_folder(args: argparse.Namespace, workdir: Path) -> str:
    if args.model:
        return str(args.model)
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.published import build

    name = GUIDANCE_MODELS[args.guidance]
    started = time.perf_counter()
    folder = build(name, workdir / name, full=args.size == "full")
    print(f"built {name} ({args.size}, random weights) in {time.perf_counter() - started:.0f}s")
    return str(folder)


def overrides(args: argparse.Namespace, key: str, model: str) -> dict[str, Any]:
    from sds_core.config import deep_merge

    generator = dict(GENERATORS[key][1])
    if args.small:
        generator.update(SMALL[key])
    if key.startswith("nerf"):
        generator.update(compile=args.compile, sampler=args.sampler)
    tree: dict[str, Any] = {
        "generator": generator,
        "guidance": {"model": model, "compile": args.compile},
        "cameras": {"width": args.width, "height": args.width, "batch_size": args.batch},
        "run": {"steps": 10**6, "preview_every": 0, "checkpoint_every": 0},
    }
    if args.dtype:
        tree["guidance"]["dtype"] = args.dtype
    return deep_merge(tree, args.sets)


def measure(key: str, args: argparse.Namespace, model: str, cache: dict[str, Any]) -> dict[str, Any]:
    """`sds bench`'s measurement (sds_cli.bench) of one generator variant under the paper preset."""
    from sds_cli.bench import BenchCase
    from sds_cli.bench import measure as bench_measure
    from sds_core.plugins import load_catalog

    case = BenchCase(key, GENERATORS[key][0], overrides(args, key, model))
    row = bench_measure(
        case,
        guidance=args.guidance,
        preset="paper",
        prompt=args.prompt,
        device=args.torch_device,
        steps=args.steps,
        warmup=args.warmup,
        start_step=args.start_step,  # past the albedo-only steps: shaded renders and normals, as most of a run
        catalog=cache.setdefault("catalog", load_catalog()),
        cache=cache,
    )
    return {**row, "compile": args.compile}


def print_row(row: dict[str, Any]) -> None:
    split = " ".join(f"{k[5:-3]} {v:.1f}" for k, v in row.items() if k.startswith("step_") and k != "step_ms")
    prior = " + ".join(f"{k[6:-3]} {v:.1f}" for k, v in row.items() if k.startswith("prior_") and k != "prior_ms")
    memory = "peak allocated" if row["device"] == "cuda" else "process peak RSS"
    print(
        f"{row['generator']:<14} step {row['step_ms']:8.1f} ms ({split})  prior {row['prior_ms']:8.1f} ms ({prior})"
        f"  step/prior {row['ratio']:6.2f}  {memory} {row['peak_mb']:7.0f} MB"
        f"  10k steps {row['projected_10k_min']:7.1f} min  (warm-up {row['warmup_s']:.1f}s)"
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_device(parser, "auto", help="auto, cpu or cuda")
    parser.add_argument("--guidance", default="stable-diffusion", choices=sorted(GUIDANCE_MODELS))
    parser.add_argument("--model", default=None, help="a diffusers folder or hub id (default: built at random)")
    parser.add_argument("--size", choices=["tiny", "full"], default=None, help="default: tiny on CPU, full on CUDA")
    parser.add_argument("--generators", nargs="+", choices=list(GENERATORS), default=list(GENERATORS))
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="guidance and field")
    parser.add_argument("--sampler", choices=["auto", "nerfacc", "torch"], default="auto", help="the NeRF's")
    parser.add_argument("--dtype", default=None, help="guidance.dtype (default: the backend's auto)")
    parser.add_argument("--width", type=int, default=None, help="render side (default: 64 on CUDA, 16 on CPU)")
    parser.add_argument("--batch", type=int, default=1, help="cameras per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (averaged)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (compilation happens here)")
    parser.add_argument("--start-step", type=int, default=1000, help="the loop's step counter (shading, anneals)")
    parser.add_argument("--prompt", default="a DSLR photo of a corgi")
    harness.add_sets(parser, help="key.path=value for every generator's run")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here (as a stored result)")
    harness.add_record(parser)
    args = parser.parse_args(argv)

    args.sets = harness.parse_sets(args.set)  # as `sds generate --set`, checked before any model is built
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = args.torch_device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.size = args.size or ("full" if cuda else "tiny")
    args.small = not cuda
    args.width = args.width or (64 if cuda else 16)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}", end="")
    print(f", {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}" if cuda else "")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sds-step-cost-") as tmp:
        workdir = Path(tmp)
        model = model_folder(args, workdir)
        cache: dict[str, Any] = {}
        for key in args.generators:
            row = measure(key, args, model, cache)
            print_row(row)
            rows.append(row)
    command = harness.command(__file__, argv)
    for path in (args.json, args.record):  # --json has always written the stored result here
        if path is not None:
            harness.write_record(path, rows, device, command)
    return rows


if __name__ == "__main__":
    from sds_core.errors import SdsError

    try:
        main()
    except SdsError as exc:  # a bad model folder or option: one sentence, as the CLI does
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
