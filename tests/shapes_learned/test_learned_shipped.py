"""The shipped `shapes-learned`, `shapes-learned-sd`, `shapes-learned-flow` and `shapes-zero123` models: in the
package, registered, and lifted to 3D: a short SDS run with each (the mesh generator's draft preset,
and the nerf draft with the options the README names for these models; A.2's cameras; for
`shapes-zero123` one render of the object as `--image`) moves the initial blob towards the
prompt's object, judged against the true shape by `sds eval geometry`."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("sds_shapes_learned")
pytest.importorskip("diffusers")
pytest.importorskip("sds_guidance")
pytest.importorskip("sds_mesh")
pytest.importorskip("sds_cli")

from typer.testing import CliRunner

from sds_cli.app import app
from sds_shapes_learned.plugin import (
    SHAPES_LEARNED,
    SHAPES_LEARNED_FLOW,
    SHAPES_LEARNED_SD,
    SHAPES_ZERO123,
    SHAPES_ZERO123_DISTANCE,
    SHAPES_ZERO123_FOCAL,
)

# only the size of what final/ holds is shrunk; the run is the draft preset's
SMALL_EXPORT = {"texture_size": 128, "video_frames": 4, "video_resolution": 32}
PROMPT = "a red sphere"
STEPS = 200
# measured with the shipped weights (step 13,805; seed 0): IoU 0.433 after one step (the initial
# blob), 0.525 after 150, 0.574 after 200 (about 25 s on one core), 0.626 after 300, 0.773 after
# the preset's 800. The cube moves less with these weights (0.365 to 0.473 in 300 steps), too
# close to the bar for a test.
MIN_GAIN = 0.1
# The nerf command the README names for this model: the draft preset with Magic3D's blob and
# A.2's cosine decay. Measured (sphere, seed 0): IoU 0.436 after one step (the blob), 0.744 after
# 150 (about 10 s on one core), 0.834 after 300, 0.829 after 6,000.
README_NERF = ("generator.blob=magic3d", "optim.schedule=warmup_cosine", "optim.warmup_steps=0", "optim.lr_final=5e-4")
# the SD model's command adds CFG 1,000 (the backend's default is the paper's 100); 300 steps
README_NERF_SD = (*README_NERF, "loss.guidance_scale=1000")
# the flow model's: CFG 30, 300 steps
README_NERF_FLOW = (*README_NERF, "loss.guidance_scale=30")
NERF_MIN_GAIN = 0.2
NERF_STEPS = 150
# shapes-zero123 from one render of the sphere (benchmarks/image_shapes.py's), its registration's
# options alone. Measured (seed 0, step-8,000 weights): IoU 0.000 after one step (the draft's
# nearly empty start), 0.309 after 150, 0.464 after 300 (about 30 s on one core), 0.86 after the
# preset's 1,500 (the stored result)
ZERO123_STEPS = 300


SHIPPED = [
    ("shapes-learned", SHAPES_LEARNED),
    ("shapes-learned-sd", SHAPES_LEARNED_SD),
    ("shapes-learned-flow", SHAPES_LEARNED_FLOW),
    ("shapes-zero123", SHAPES_ZERO123),
]


@pytest.mark.parametrize(("name", "folder"), SHIPPED)
def test_the_model_ships_in_the_package_and_is_registered(name: str, folder: Path) -> None:
    from sds_core.plugins import load_catalog

    assert (folder / "model_index.json").is_file(), f"the {name} folder is missing from sds-shapes-learned"
    weights = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
    assert 0 < weights < 25 * 2**20  # the bound: under 25 MB
    card = (folder / "README.md").read_text()
    assert card.startswith(f"# {name}\n")  # the model card
    # its SHA-256 lines (`sha256sum` format) name every weight file and match it byte for byte
    listed = dict((path, digest) for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", card, re.M))
    files = {f.relative_to(folder).as_posix(): f for f in folder.rglob("*.safetensors")}
    assert set(listed) == set(files)
    assert all(hashlib.sha256(f.read_bytes()).hexdigest() == listed[path] for path, f in files.items())
    spec = load_catalog().get("guidance", name)
    config = spec.config()
    assert config.model == str(folder) and config.background == (1.0, 1.0, 1.0)


def test_the_flow_model_is_registered_without_t5_at_its_own_side() -> None:
    from sds_cli.defaults import DEFAULT_NAMES
    from sds_core.plugins import load_catalog
    from sds_core.resolve import resolve_config

    catalog = load_catalog()
    trained = json.loads((SHAPES_LEARNED_FLOW / "training.json").read_text())["config"]
    config = catalog.get("guidance", "shapes-learned-flow").config()
    # the folder has no T5: its tokens are zeros, as many as the model was trained with
    assert config.drop_t5 is True and config.max_sequence_length == trained["t5_tokens"] == 32
    # the draft preset keeps the model's own side (the SD3 backend's own draft renders at 256)
    names = {"generator": "nerf", "loss": None}
    for guidance, resolution in (("shapes-learned-flow", None), ("stable-diffusion-3", 256)):
        tree = resolve_config(catalog, "draft", None, {**names, "guidance": guidance}, DEFAULT_NAMES).tree
        assert tree["guidance"]["resolution"] == resolution


def test_shapes_zero123_sees_its_references_at_its_training_cameras() -> None:
    import math

    from sds_cli.defaults import DEFAULT_NAMES
    from sds_core.plugins import load_catalog
    from sds_core.resolve import resolve_config

    catalog = load_catalog()
    config = catalog.get("guidance", "shapes-zero123").config()
    trained = json.loads((SHAPES_ZERO123 / "training.json").read_text())["config"]
    assert trained["format"] == "zero123" and trained["init"] == "shapes-learned-sd"
    # the reference camera and the novel views sit inside A.2's distances and focal lengths, which
    # its training pairs were drawn from; its renders are not recentred
    assert 1.0 <= config.reference_distance == SHAPES_ZERO123_DISTANCE <= 1.5
    assert config.reference_fov == pytest.approx(math.degrees(2 * math.atan(0.5 / SHAPES_ZERO123_FOCAL)), abs=0.01)
    assert config.recenter_border == 0.0 and config.lambda_sds == 100.0
    names = {"generator": "nerf", "guidance": "shapes-zero123", "loss": None}
    tree = resolve_config(catalog, "draft", None, names, DEFAULT_NAMES).tree
    assert tree["cameras"]["distance_range"] == [SHAPES_ZERO123_DISTANCE] * 2
    assert tree["cameras"]["focal_range"] == [SHAPES_ZERO123_FOCAL] * 2
    assert tree["guidance"]["resolution"] is None  # the model's own side
    assert tree["generator"]["albedo_only_steps"] == 100_000  # the zero123 backend's recipe


def _iou(
    tmp_path: Path,
    steps: int,
    generator: str = "mesh",
    sets: tuple[str, ...] = (),
    guidance: str = "shapes-learned",
    prompt: str = PROMPT,
    image: Path | None = None,
) -> float:
    runner = CliRunner()
    out = tmp_path / f"{guidance}-{generator}-steps-{steps}"
    args = ["generate", prompt, "--generator", generator, "--guidance", guidance, "--preset", "draft"]
    args += ["--image", str(image)] if image is not None else []
    args += ["--seed", "0"]
    args += ["--steps", str(steps), "--device", "cpu", "--out", str(out)]
    args += [a for k, v in SMALL_EXPORT.items() for a in ("--set", f"generator.{k}={v}")]
    args += [a for item in sets for a in ("--set", item)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = tmp_path / f"geometry-{guidance}-{generator}-{steps}.json"
    result = runner.invoke(app, ["eval", "geometry", str(out), "--json", str(report)])
    assert result.exit_code == 0, result.output
    row = json.loads(report.read_text())["runs"][0]
    assert row["object"] == prompt
    return float(row["iou"])


def test_sds_with_the_shipped_model_moves_the_blob_towards_the_object(tmp_path) -> None:
    start, end = _iou(tmp_path, 1), _iou(tmp_path, STEPS)
    assert end > start + MIN_GAIN, f"IoU {end:.3f} after {STEPS} steps, {start:.3f} after one"


# Measured for shapes-learned-sd (sphere, seed 0, its README options): IoU 0.435 after one step,
# 0.782 after 150 (about 9 s on one core), 0.855 after 300.
@pytest.mark.parametrize(
    ("guidance", "sets"),
    [("shapes-learned", README_NERF), ("shapes-learned-sd", README_NERF_SD), ("shapes-learned-flow", README_NERF_FLOW)],
)
def test_the_readme_nerf_command_lifts_the_sphere(tmp_path, guidance: str, sets: tuple[str, ...]) -> None:
    pytest.importorskip("sds_nerf")
    start = _iou(tmp_path, 1, "nerf", sets, guidance)
    end = _iou(tmp_path, NERF_STEPS, "nerf", sets, guidance)
    assert end > start + NERF_MIN_GAIN, f"{guidance}: IoU {end:.3f} after {NERF_STEPS} steps, {start:.3f} after one"


def _reference_png(tmp_path: Path, prompt: str) -> tuple[Path, float]:
    """benchmarks/image_shapes.py's reference, the object's exact render at shapes-zero123's
    camera, and its elevation."""
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("image_shapes", root / "benchmarks" / "image_shapes.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    image = bench.reference_render(prompt, bench.ELEVATION, 64, (1.0, 1.0, 1.0))
    return bench.write_png(image, tmp_path / "reference.png"), bench.ELEVATION


def test_shapes_zero123_lifts_the_sphere_from_one_render(tmp_path) -> None:
    pytest.importorskip("sds_nerf")
    image, elevation = _reference_png(tmp_path, PROMPT)
    sets = (f"guidance.reference_elevation={elevation}",)
    start = _iou(tmp_path, 1, "nerf", sets, "shapes-zero123", image=image)
    end = _iou(tmp_path, ZERO123_STEPS, "nerf", sets, "shapes-zero123", image=image)
    assert end > start + NERF_MIN_GAIN, f"IoU {end:.3f} after {ZERO123_STEPS} steps, {start:.3f} after one"
