"""Exports of a fixed ball field: GLB / OBJ / PLY round-trip through trimesh, videos, the page."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_core.errors import ConfigError
from sds_core.protocols import ExportContext

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("skimage")
pytest.importorskip("xatlas")
imageio = pytest.importorskip("imageio.v2")

from tests.nerf.helpers import SphereField, sphere_generator  # noqa: E402

SMALL = {"mesh_resolution": 48, "texture_size": 128, "video_frames": 4, "video_resolution": 32, "samples_per_ray": 32}


def context(**options: object) -> ExportContext:
    sampler = CameraSampler(CameraConfig(width=32, height=32))
    return ExportContext(sampler, "a ball", torch.device("cpu"), **options)


def level_radius(level: float) -> float:
    """Where the ball's density exp(20 (0.6 - r)) equals `level`."""
    return SphereField.ball - math.log(level) / SphereField.sharpness


def test_sphere_field_exports_round_trip(tmp_path: Path) -> None:
    gen = sphere_generator(**SMALL)
    paths = gen.export(tmp_path, context())
    names = {p.name for p in paths}
    assert {"mesh.glb", "mesh.obj", "mesh.mtl", "mesh.ply", "turntable.mp4", "turntable.gif", "index.html"} <= names
    expected_volume = 4 / 3 * math.pi * level_radius(gen.surface_level()) ** 3

    ply = trimesh.load(tmp_path / "mesh.ply")
    assert ply.is_watertight and ply.is_winding_consistent
    assert ply.volume == pytest.approx(expected_volume, rel=0.05)  # positive: faces wound outward
    colors = ply.visual.vertex_colors[:, :3].astype(float)
    assert colors.std(0).max() > 10  # the field's colour varies over the ball

    glb = trimesh.load(tmp_path / "mesh.glb", force="mesh")
    assert glb.visual.kind == "texture" and glb.visual.uv is not None
    welded = glb.copy()
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    assert welded.is_watertight
    assert glb.volume == pytest.approx(expected_volume, rel=0.05)
    # y-up files: the world's z axis is the file's y axis, so the extent is the same on all axes here
    assert glb.bounds[1] == pytest.approx([level_radius(gen.surface_level())] * 3, abs=0.05)

    obj = trimesh.load(tmp_path / "mesh.obj", force="mesh")
    assert obj.visual.kind == "texture" and len(obj.faces) == len(glb.faces)
    assert any(p.suffix == ".png" for p in paths)

    frames = imageio.mimread(tmp_path / "turntable.mp4")
    assert len(frames) == 4 and frames[0].shape[1] == 2 * frames[0].shape[0]  # colour | textureless
    page = (tmp_path / "index.html").read_text()
    assert "data:model/gltf-binary;base64," in page and "http://" not in page and "https://" not in page


def test_export_honours_formats_resolution_threshold(tmp_path: Path) -> None:
    gen = sphere_generator(**SMALL)
    a = gen.export(tmp_path / "a", context(formats=("ply",), resolution=32, threshold=10.0))
    assert [p.name for p in a] == ["mesh.ply"]
    b = gen.export(tmp_path / "b", context(formats=("ply",), resolution=64, threshold=100.0))
    mesh_a, mesh_b = trimesh.load(a[0]), trimesh.load(b[0])
    assert len(mesh_b.vertices) > len(mesh_a.vertices)
    assert mesh_b.volume == pytest.approx(4 / 3 * math.pi * level_radius(100.0) ** 3, rel=0.05)
    with pytest.raises(ConfigError, match="unknown export format"):
        gen.export(tmp_path / "c", context(formats=("fbx",)))


def test_empty_field_writes_no_mesh_but_warns(tmp_path: Path) -> None:
    gen = sphere_generator(**SMALL)
    with pytest.warns(UserWarning, match="no mesh written"):
        paths = gen.export(tmp_path, context(formats=("glb",), threshold=1e9))
    assert [p.name for p in paths] == ["index.html"]
