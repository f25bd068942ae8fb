"""SDS into a 2D image with the exact `shapes` prior: PSNR to the nearest true reference view, and time.

    python benchmarks/guidance_shapes_image.py                      # "a red cube", draft and paper presets
    python benchmarks/guidance_shapes_image.py --prompt "a blue torus" --omega 0 5 20 100

The run is what `sds generate PROMPT --generator image --guidance shapes --preset P` does, on CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sds_core.lifecycle import start_run

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness


def run(prompt: str, preset: str, omega: float | None, steps: int | None, out: Path) -> tuple[float, float, int]:
    overrides: dict[str, dict[str, object]] = {"run": {"preview_every": 0, "checkpoint_every": 0}}
    if omega is not None:
        overrides["loss"] = {"guidance_scale": omega}
    if steps is not None:
        overrides["run"]["steps"] = steps
    started = time.perf_counter()
    trainer = start_run(
        prompt,
        out,
        preset=preset,
        names={"generator": "image", "guidance": "shapes"},
        overrides=overrides,
        device="cpu",
    )
    trainer.run()
    elapsed = time.perf_counter() - started
    image = trainer.generator.image().detach()
    refs = trainer.guidance.reference_images("albedo")
    mse = (refs - image).pow(2).flatten(1).mean(1)
    return float(-10 * torch.log10(mse.min())), elapsed, trainer.total_steps


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="a red cube")
    parser.add_argument("--presets", nargs="+", default=["draft", "paper"])
    parser.add_argument("--omega", nargs="*", type=float, default=[], help="guidance scales (default: the prior's)")
    harness.add_preset_steps(parser, preset=None)
    harness.add_outputs(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    print(f"{args.prompt!r}: SDS into an image with the shapes prior, CPU, {torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            for i, omega in enumerate(args.omega or [None]):
                psnr, seconds, steps = run(args.prompt, preset, omega, args.steps, Path(tmp) / f"{preset}-{i}")
                label = "default" if omega is None else f"{omega:g}"
                rows.append({"preset": preset, "omega": omega, "steps": steps, "psnr_db": psnr, "wall_s": seconds})
                print(
                    f"preset {preset:<6} omega {label:<8} steps {steps:5d}  PSNR {psnr:5.1f} dB  "
                    f"time {seconds:6.1f} s (references cached after the first run)"
                )
    harness.write_outputs(args, rows, "cpu", __file__, argv)
    return rows


if __name__ == "__main__":
    main()
