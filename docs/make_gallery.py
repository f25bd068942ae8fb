"""Make the README's pictures: short real runs of `sds generate "a red cube"`, one at a time, each
run's `final/turntable.gif` copied into docs/images/.

    OMP_NUM_THREADS=1 python docs/make_gallery.py            # every picture
    OMP_NUM_THREADS=1 python docs/make_gallery.py nerf mesh  # some of them

Each run writes into a temporary folder that is deleted afterwards; a GIF over 500 KB is refused
(lower FRAMES or RESOLUTION below).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

IMAGES = Path(__file__).resolve().parent / "images"
PROMPT = "a red cube"
FRAMES = 24  # turntable frames (one orbit)
RESOLUTION = 96  # side of each turntable view (the GIF is [colour | textureless], twice as wide)
LIMIT = 500_000  # bytes per picture
# only the turntable: no mesh export, no viewer
COMMON = (
    "--preset",
    "draft",
    "--device",
    "cpu",
    "--set",
    f"generator.video_frames={FRAMES}",
    "--set",
    f"generator.video_resolution={RESOLUTION}",
    "--set",
    'generator.export_formats=["gif"]',
)
# the learned prior's nerf options, as its model card names them
LEARNED = (
    "--set",
    "generator.blob=magic3d",
    "--set",
    "optim.schedule=warmup_cosine",
    "--set",
    "optim.warmup_steps=0",
    "--set",
    "optim.lr_final=5e-4",
)
RUNS: dict[str, tuple[str, ...]] = {
    "nerf": ("--generator", "nerf", "--guidance", "shapes"),
    "mesh": ("--generator", "mesh", "--guidance", "shapes"),
    "gaussians": ("--generator", "gaussians", "--guidance", "shapes"),
    "nerf-learned": ("--generator", "nerf", "--guidance", "shapes-learned", *LEARNED),
}


def make(name: str) -> Path:
    """Run RUNS[name] into a temporary folder; copy its turntable to docs/images/NAME.gif."""
    base = Path(tempfile.mkdtemp(prefix=f"sds-gallery-{name}-"))
    try:
        out = base / "run"
        command = ["sds", "generate", PROMPT, *COMMON, *RUNS[name], "--out", str(out)]
        print("+", " ".join(command), flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        gif = out / "final" / "turntable.gif"
        size = gif.stat().st_size
        if size > LIMIT:
            raise SystemExit(f"{gif} is {size} bytes, over {LIMIT}: lower FRAMES or RESOLUTION")
        IMAGES.mkdir(exist_ok=True)
        target = IMAGES / f"{name}.gif"
        shutil.copyfile(gif, target)
        print(f"{target}: {size} bytes", flush=True)
        return target
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        raise SystemExit(f"unknown picture(s) {unknown}; accepted: {', '.join(RUNS)}")
    for name in names or list(RUNS):
        make(name)


if __name__ == "__main__":
    main(sys.argv[1:])
