"""The GLB of final/ against the Khronos glTF-Validator (npm `gltf-validator`, pinned in noxfile.py;
SDS_GLTF_VALIDATOR names the node_modules folder that holds it; the tests skip without it): each
generator's, from the checkpoints of tests/fixtures/runs, and the protocol objects' of objects.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from sds_core.api import CameraConfig, CameraSampler, ExportContext

pytest.importorskip("trimesh")
pytest.importorskip("skimage")
pytest.importorskip("xatlas")

from sds_3d.final import write_final

from .objects import Ball, Box

TESTS = Path(__file__).resolve().parents[1]
VALIDATOR_SCRIPT = TESTS / "fixtures" / "validate_gltf.js"
RUNS = TESTS / "fixtures" / "runs"


def validate(glb: Path) -> None:
    folder = os.environ.get("SDS_GLTF_VALIDATOR")
    if shutil.which("node") is None or not folder or not (Path(folder) / "gltf-validator").is_dir():
        pytest.skip("the Khronos glTF-Validator is not installed (nox -s tests installs it with npm)")
    env = {**os.environ, "NODE_PATH": str(folder)}
    done = subprocess.run(["node", str(VALIDATOR_SCRIPT), str(glb)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["errors"] == 0 and report["warnings"] == 0, report["messages"]


@pytest.mark.parametrize("generator", ["nerf", "mesh", "gaussians"])
def test_each_generators_glb_passes_the_validator(tmp_path: Path, generator: str) -> None:
    pytest.importorskip(f"sds_{generator}")
    pytest.importorskip("sds_shapes")  # the fixtures' guidance, resolved (not built) when loading
    from sds_core.api import load_run

    shutil.copytree(RUNS / f"{generator}-step4", tmp_path / "run")
    run = load_run(tmp_path / "run", "cpu")
    assert "mesh.glb" in {p.name for p in run.export(formats=("glb",))}
    validate(tmp_path / "run" / "final" / "mesh.glb")


@pytest.mark.parametrize("make", [Ball, Box])
def test_a_protocol_objects_glb_passes_the_validator(tmp_path: Path, make: type) -> None:
    context = ExportContext(CameraSampler(CameraConfig(width=16, height=16)), "a shape", torch.device("cpu"), ("glb",))
    write_final(make(), tmp_path, context, bound=1.0, resolution=24)
    validate(tmp_path / "mesh.glb")
