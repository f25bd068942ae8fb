"""`sds_3d.final.write_final` on objects that are none of sds's generators: a `DensityField` ball
and a `SurfaceMesh` box get every file of final/ from their geometry protocols alone."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sds_core.api import EXPORT_FORMATS, CameraConfig, CameraSampler, ConfigError, ExportContext

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("skimage")
pytest.importorskip("xatlas")

from sds_3d.final import write_final  # noqa: E402
from sds_3d.formats import MESH_FORMATS, VIDEO_FORMATS, VIEWER_FORMAT, requested_formats  # noqa: E402

from .objects import Ball, Box, FineBox, Recorder  # noqa: E402

ALL_FILES = {
    "mesh.glb",
    "mesh.obj",
    "mesh.mtl",
    "albedo.png",
    "mesh.ply",
    "turntable.mp4",
    "turntable.gif",
    "index.html",
}


def context(**options: object) -> ExportContext:
    return ExportContext(CameraSampler(CameraConfig(width=16, height=16)), "a ball", torch.device("cpu"), **options)


def test_a_density_field_gets_every_file_in_eval_mode(tmp_path: Path) -> None:
    ball = Ball()
    order: list[str] = []
    paths = write_final(
        ball, tmp_path, context(), bound=1.0, resolution=32, before_render=lambda: order.append(str(ball.log))
    )
    assert {p.name for p in paths} == ALL_FILES and all(p.is_file() for p in paths)
    ply = trimesh.load(tmp_path / "mesh.ply")
    assert ply.is_watertight and ply.volume == pytest.approx(4 / 3 * math.pi * ball.level_radius(1.0) ** 3, rel=0.05)
    colors = ply.visual.vertex_colors[:, :3].astype(float)
    assert colors[:, 2] == pytest.approx(64, abs=1) and colors[:, 0].std() > 10  # the albedo callable's
    # the surface first, then before_render, then the turntable (2 frames: albedo, textureless), all in eval
    assert order == [str([("density_field", False)])]
    assert ball.log[1:] == [("albedo", False), ("textureless", False)] * 2
    assert ball.training  # restored


def test_resolution_threshold_and_formats_are_honoured(tmp_path: Path) -> None:
    ball = Ball()
    a = write_final(ball, tmp_path / "a", context(formats=("ply",)), bound=1.0, resolution=24)
    b = write_final(
        ball, tmp_path / "b", context(formats=("ply",), resolution=40, threshold=5.0), bound=1.0, resolution=24
    )
    assert [p.name for p in a] == [p.name for p in b] == ["mesh.ply"]
    mesh_a, mesh_b = trimesh.load(a[0]), trimesh.load(b[0])
    assert len(mesh_b.vertices) > len(mesh_a.vertices)
    assert mesh_b.volume == pytest.approx(4 / 3 * math.pi * ball.level_radius(5.0) ** 3, rel=0.05)
    assert all(mode not in ("albedo", "textureless") for mode, _ in ball.log)  # no turntable asked for
    videos = write_final(Ball(), tmp_path / "c", context(formats=("gif",)), bound=1.0, resolution=24)
    assert [p.name for p in videos] == ["turntable.gif"]  # no grid either


def test_a_field_without_surface_warns_and_writes_the_rest(tmp_path: Path) -> None:
    with pytest.warns(
        UserWarning, match=r"no mesh written: no surface at density level 1e\+09.*; pass another --threshold"
    ):
        paths = write_final(Ball(), tmp_path, context(formats=("glb", "ply"), threshold=1e9), bound=1.0, resolution=16)
    assert [p.name for p in paths] == ["index.html"]


def test_a_density_field_needs_its_grid(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="bound and resolution"):
        write_final(Ball(), tmp_path, context(formats=("ply",)))


def test_a_surface_mesh_is_written_with_its_vertex_colours(tmp_path: Path) -> None:
    box = Box()
    paths = write_final(box, tmp_path, context(resolution=64, threshold=3.0))  # neither applies to a mesh
    assert {p.name for p in paths} == ALL_FILES
    ply = trimesh.load(tmp_path / "mesh.ply", process=False)
    assert len(ply.vertices) == 8 and len(ply.faces) == 12
    # y-up file: (x, y, z) -> (x, z, -y); every corner keeps its colour
    source = box.surface_mesh()
    expected = {tuple(np.round(v @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]), 4)): tuple(c[:3])
                for v, c in zip(source.vertices, source.visual.vertex_colors, strict=True)}  # fmt: skip
    got = {tuple(np.round(v, 4)): tuple(c[:3]) for v, c in zip(ply.vertices, ply.visual.vertex_colors, strict=True)}
    assert got == expected
    glb = trimesh.load(tmp_path / "mesh.glb", force="mesh")
    assert glb.visual.kind == "texture" and glb.volume == pytest.approx(0.6**3, rel=1e-3)
    texture = np.asarray(glb.visual.material.baseColorTexture)[..., :3].reshape(-1, 3)
    assert texture.min() >= 19 and texture.max() <= 221 and len(np.unique(texture, axis=0)) > 8  # interpolated


def test_vertex_albedo_replaces_the_8_bit_colours(tmp_path: Path) -> None:
    write_final(FineBox(), tmp_path, context(formats=("ply",)))
    ply = trimesh.load(tmp_path / "mesh.ply", process=False)
    assert np.abs(ply.visual.vertex_colors[:, :3].astype(float) - 0.3 * 255).max() <= 0.5


def test_extra_files_come_first_and_no_geometry_means_no_mesh(tmp_path: Path) -> None:
    def extra(out: Path) -> list[Path]:
        (out / "points.ply").write_bytes(b"ply\n")
        return [out / "points.ply"]

    plain = Recorder()  # neither SurfaceMesh nor DensityField
    paths = write_final(plain, tmp_path, context(formats=("glb", "gif")), extra=extra)
    assert [p.name for p in paths] == ["points.ply", "turntable.gif", "index.html"]


def test_formats_come_from_export_formats(tmp_path: Path) -> None:
    assert (*MESH_FORMATS, *VIDEO_FORMATS, VIEWER_FORMAT) == EXPORT_FORMATS
    assert requested_formats(context(), ("ply",)) == ("ply",)
    assert requested_formats(context(formats=("gif", "glb")), EXPORT_FORMATS) == ("gif", "glb")
    with pytest.raises(
        ConfigError, match=r"unknown export format\(s\) \['fbx'\]; accepted: glb, obj, ply, mp4, gif, html"
    ):
        write_final(Ball(), tmp_path, context(formats=("ply", "fbx")), bound=1.0, resolution=16)
    assert not list(tmp_path.iterdir())  # refused before anything is written
