"""The `gaussians` exports: the 3DGS PLY's values, the density field, and the GLB against the
Khronos glTF-Validator (npm `gltf-validator`, pinned in noxfile.py; SDS_GLTF_VALIDATOR names
the node_modules folder that holds it, the test skips without it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from sds_core.lifecycle import start_run
from sds_core.plugins import Catalog
from sds_gaussians.config import GaussianConfig
from sds_gaussians.export import SH_C0, ply_bytes
from sds_gaussians.field import GaussianField
from sds_gaussians.gaussians import GaussianModel

VALIDATOR_SCRIPT = Path(__file__).resolve().parents[1] / "fixtures" / "validate_gltf.js"


def test_ply_holds_the_gaussians_in_3dgs_conventions(tmp_path: Path) -> None:
    trimesh = pytest.importorskip("trimesh")
    torch.manual_seed(0)
    g = GaussianModel(GaussianConfig(num_points=50))
    with torch.no_grad():
        g.quats.mul_(2.0)  # unnormalised: the file holds unit quaternions
    path = tmp_path / "g.ply"
    path.write_bytes(ply_bytes(g))
    data = trimesh.load(path).metadata["_ply_raw"]["vertex"]["data"]
    assert np.allclose(np.stack([data["x"], data["y"], data["z"]], -1), g.means.detach().numpy())
    colors = 0.5 + SH_C0 * np.stack([data[f"f_dc_{i}"] for i in range(3)], -1)
    assert np.allclose(colors, g.colors().detach().numpy(), atol=1e-6)
    assert np.allclose(data["opacity"], g.opacity_logits.detach().numpy())
    assert np.allclose(data["scale_0"], g.log_scales.detach().numpy()[:, 0])
    assert np.allclose(data["rot_0"], 1.0) and np.allclose(data["rot_1"], 0.0)


def test_density_field_is_the_sum_of_the_gaussians() -> None:
    torch.manual_seed(0)
    g = GaussianModel(GaussianConfig(num_points=2))
    with torch.no_grad():
        g.means[:] = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
        g.log_scales[:] = torch.log(torch.tensor([[0.1, 0.2, 0.05], [0.1, 0.1, 0.1]]))
        g.opacity_logits[:] = torch.logit(torch.tensor([0.8, 0.5]))
        g.color_logits[:] = torch.logit(torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.1, 0.9]]))
    field = GaussianField.of(g)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.2, 0.0], [0.5, 0.0, 0.05], [2.0, 2.0, 2.0]])
    # axis-aligned (identity quaternions): sum_i o_i exp(-sum_k (x_k - mu_ik)^2 / (2 s_ik^2))
    sigma = np.array([[0.1, 0.2, 0.05], [0.1, 0.1, 0.1]])
    mu = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    q = (((points.numpy()[:, None] - mu[None]) / sigma[None]) ** 2).sum(-1)
    expected = torch.tensor((np.array([0.8, 0.5]) * np.exp(-0.5 * q)).sum(-1), dtype=torch.float32)
    assert float(expected[0]) > 0.8 and float(expected[1]) > 0.2 and float(expected[3]) == 0.0
    assert torch.allclose(field.density(points), expected, atol=1e-6)
    assert torch.allclose(field.albedo(points[:1]), torch.tensor([[0.9, 0.1, 0.1]]), atol=1e-3)
    assert torch.allclose(field.albedo(points[3:]), torch.tensor([[0.1, 0.1, 0.9]]), atol=1e-6)  # nearest


def _validator() -> Path:
    folder = os.environ.get("SDS_GLTF_VALIDATOR")
    if shutil.which("node") is None or not folder or not (Path(folder) / "gltf-validator").is_dir():
        pytest.skip("the Khronos glTF-Validator is not installed (nox -s tests installs it with npm)")
    return Path(folder)


def test_glb_passes_the_gltf_validator(tmp_path: Path, catalog: Catalog) -> None:
    node_modules = _validator()
    pytest.importorskip("sds_shapes")
    overrides = {
        "generator": {"num_points": 300, "init_opacity": 0.9, "mesh_resolution": 32, "texture_size": 32,
                      "video_frames": 2, "video_resolution": 16, "export_formats": ["glb"]},
        "cameras": {"width": 16, "height": 16},
        "run": {"steps": 1, "preview_every": 0, "checkpoint_every": 0},
    }  # fmt: skip
    names = {"generator": "gaussians", "guidance": "shapes"}
    start_run("a red cube", tmp_path / "run", "draft", overrides, names, "cpu", [], catalog).run()
    glb = tmp_path / "run" / "final" / "mesh.glb"
    env = {**os.environ, "NODE_PATH": str(node_modules)}
    done = subprocess.run(["node", str(VALIDATOR_SCRIPT), str(glb)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["errors"] == 0 and report["warnings"] == 0, report["messages"]
