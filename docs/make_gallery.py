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
    # image-to-3D: one render of the cube (benchmarks/image_shapes.py's, written beside the run
    # and copied to docs/images/zero123-reference.png) lifted by shapes-zero123
    "nerf-zero123": ("--generator", "nerf", "--guidance", "shapes-zero123"),
}
# the pictures whose run takes the reference render as --image
WITH_IMAGE = {"nerf-zero123"}


def reference_image(folder: Path) -> list[str]:
    """`--image` and its camera's elevation for the cube's render at shapes-zero123's reference
    camera (benchmarks/image_shapes.py's), also copied to docs/images."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "image_shapes.py"
    spec = importlib.util.spec_from_file_location("image_shapes", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    image = bench.reference_render(PROMPT, bench.ELEVATION, 64, (1.0, 1.0, 1.0))
    path = bench.write_png(image, folder / "reference.png")
    IMAGES.mkdir(exist_ok=True)
    shutil.copyfile(path, IMAGES / "zero123-reference.png")
    return ["--image", str(path), "--set", f"guidance.reference_elevation={bench.ELEVATION}"]


def make(name: str) -> Path:
    """Run RUNS[name] into a temporary folder; copy its turntable to docs/images/NAME.gif."""
    base = Path(tempfile.mkdtemp(prefix=f"sds-gallery-{name}-"))
    try:
        out = base / "run"
        command = ["sds", "generate", PROMPT, *COMMON, *RUNS[name], "--out", str(out)]
        if name in WITH_IMAGE:
            command += reference_image(base)
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
