"""The `texture` generator: a UV texture optimised over a mesh file, its geometry kept bit for bit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sds_core.plugins import Catalog

pytest.importorskip("xatlas")

TESTS = Path(__file__).resolve().parents[1]
SMALL = [
    *("--set", "generator.texture_size=32", "--set", "generator.video_frames=2"),
    *("--set", "generator.video_resolution=16", "--set", "cameras.width=24", "--set", "cameras.height=24"),
]


def _cli(args: list[str]):
    typer_testing = pytest.importorskip("typer.testing")
    from sds_cli.app import app

    return typer_testing.CliRunner().invoke(app, args)


def _validate(glb: Path) -> None:
    """The Khronos glTF-Validator on `glb` (SDS_GLTF_VALIDATOR, as tests/threed/test_gltf.py)."""
    folder = os.environ.get("SDS_GLTF_VALIDATOR")
    if shutil.which("node") is None or not folder or not (Path(folder) / "gltf-validator").is_dir():
        pytest.skip("the Khronos glTF-Validator is not installed (nox -s tests installs it with npm)")
    env = {**os.environ, "NODE_PATH": str(folder)}
    script = TESTS / "fixtures" / "validate_gltf.js"
    done = subprocess.run(["node", str(script), str(glb)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["errors"] == 0 and report["warnings"] == 0, report["messages"]


def test_plugin_is_listed_and_cheap_to_import(catalog: Catalog) -> None:
    spec = catalog.get("generator", "texture")
    assert spec.provider == "sds-mesh" and {"default", "paper", "draft"} <= set(spec.presets)
    code = "import sys, sds_mesh.plugin, sds_mesh.texture_config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_generate_keeps_the_mesh_bit_for_bit_and_binds_the_texture(tmp_path: Path, cube_file) -> None:
    """`sds generate "a green cube" --generator texture --set generator.mesh=CUBE --guidance shapes
    --preset draft`, shortened: final/ holds the given mesh with the texture bound."""
    pytest.importorskip("sds_shapes")
    import trimesh

    source = cube_file(".ply")
    out = tmp_path / "run"
    args = ["generate", "a green cube", "--generator", "texture", "--set", f"generator.mesh={source}"]
    args += ["--guidance", "shapes", "--preset", "draft", "--steps", "3", "--out", str(out), "--device", "cpu"]
    result = _cli([*args, "--set", "run.preview_every=0", *SMALL])
    assert result.exit_code == 0, result.output
    final = out / "final"
    given = trimesh.load(source, force="mesh", process=False)
    ply = trimesh.load(final / "mesh.ply", force="mesh", process=False)
    assert np.array_equal(np.asarray(ply.vertices).view(np.uint64), np.asarray(given.vertices).view(np.uint64))
    assert np.array_equal(ply.faces, given.faces)
    # GLB: float32 positions split along the atlas's seams; the corners of every face are the file's
    glb = trimesh.load(final / "mesh.glb", force="mesh", process=False)
    corners = np.asarray(glb.vertices, np.float32)[glb.faces]
    assert np.array_equal(corners.view(np.uint32), np.asarray(given.vertices, np.float32)[given.faces].view(np.uint32))
    image = glb.visual.material.baseColorTexture
    header = (final / "mesh.glb").read_bytes()
    gltf = json.loads(header[20 : 20 + int.from_bytes(header[12:16], "little")])
    assert gltf["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] == {"index": 0}
    assert "TEXCOORD_0" in gltf["meshes"][0]["primitives"][0]["attributes"]
    assert image.size == (32, 32) and glb.visual.uv.shape == (len(glb.vertices), 2)
    # OBJ + MTL + PNG load in trimesh with the texture, vertices exact to float32
    obj = trimesh.load(final / "mesh.obj", force="mesh", process=False)
    assert obj.visual.material.image.size == (32, 32)
    assert np.array_equal(np.asarray(obj.vertices, np.float32)[obj.faces], corners)
    png = [p.name for p in final.glob("*.png")]
    assert png and all(p in (final / "mesh.mtl").read_text() for p in png)
    for name in ("turntable.mp4", "index.html"):
        assert (final / name).stat().st_size > 0
    _validate(final / "mesh.glb")


@pytest.mark.parametrize(
    ("content", "extra", "expected"),
    [
        (b"\x00garbage", [], "is not a readable mesh"),
        (b"v 0 0 0\nv 1 0 0\n", [], "holds no triangles"),
        (b"v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n", [], "beyond repair"),
        (b"v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", [], "beyond repair"),
        (None, ["--set", "generator.max_faces=4"], "at most generator.max_faces=4"),
        (None, ["--set", "generator.textureless_probability=0.5"], "textureless"),
    ],
)
def test_a_bad_mesh_is_one_sentence_and_exit_2(tmp_path: Path, cube_file, content, extra, expected) -> None:
    pytest.importorskip("sds_shapes")
    path = cube_file(".ply") if content is None else tmp_path / ("bad.ply" if content[:1] == b"\x00" else "bad.obj")
    if content is not None:
        path.write_bytes(content)
    args = ["generate", "a green cube", "--generator", "texture", "--set", f"generator.mesh={path}", *extra]
    result = _cli([*args, "--guidance", "shapes", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_the_files_own_uvs_are_kept_else_xatlas(cube_file) -> None:
    from sds_mesh.user_mesh import load_user_mesh

    own = load_user_mesh(cube_file(".glb", uvs=True), 100, 1.0)
    assert own.atlas == "file" and np.array_equal(own.uv_faces, own.faces) and own.closed
    plain = load_user_mesh(cube_file(".obj"), 100, 1.0)
    assert plain.atlas == "xatlas" and np.array_equal(plain.vmapping[plain.uv_faces], plain.faces)
    assert plain.uvs.min() >= 0 and plain.uvs.max() <= 1


def test_seams_are_padded_past_the_uv_islands() -> None:
    from sds_3d.textured import island_mask, pad_seams

    uvs = np.array([[0.1, 0.1], [0.6, 0.1], [0.1, 0.6]], np.float32)
    mask = island_mask(uvs, np.array([[0, 1, 2]]), 16)
    assert 0 < mask.sum() < 0.3 * mask.size and mask[-3, 2] and not mask[0, -1]  # v up: the island is low left
    texture = np.where(mask[..., None], np.array([0.2, 0.4, 0.6]), 0.0)
    padded = pad_seams(texture, mask)
    assert np.allclose(padded, [0.2, 0.4, 0.6])  # every texel takes an island's colour


def _close_up(side: int):
    """One camera 0.5 in front of the cube's +x face, looking at its centre (fixed framing)."""
    from sds_core.api import CameraConfig, CameraSampler

    config = CameraConfig(width=side, height=side, target_std=0.0, position_jitter=0.0, up_std=0.0,
                          distance_range=(0.5, 0.5), focal_range=(1.0, 1.0))  # fmt: skip
    return CameraSampler(config).orbit(1, elevation=0.0)


def _generator(cube: Path, size: int, tmp_path: Path, catalog: Catalog):
    from sds_core.lifecycle import start_run

    overrides = {"generator": {"mesh": str(cube), "texture_size": size, "export_formats": ["ply"]}}
    names = {"generator": "texture", "guidance": "target"}
    return start_run("a test", tmp_path, "draft", overrides, names, "cpu", catalog=catalog).generator


def test_a_12_face_cube_carries_per_texel_detail_at_512(tmp_path: Path, cube_file, catalog: Catalog) -> None:
    """Texture resolution is independent of the vertex count: a 512-texel texture on the 12-face cube
    learns a per-texel pattern from an image target, which a 64-texel one cannot."""
    cams = _close_up(64)
    errors = {}
    for size in (512, 64):
        gen = _generator(cube_file(".ply"), size, tmp_path / str(size), catalog)
        # the pattern: a random 512-texel texture seen through the same mesh and camera
        truth = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
        target = gen.render_views(cams, ["albedo"], texture=truth).image.detach()
        covered = gen.render_views(cams, ["albedo"]).opacity.detach() > 0
        # one pixel's gradient reaches at most the 4 texels of its bilinear footprint at the finest level
        pixel = gen.render_views(cams, ["albedo"]).image[0, 1, 32, 32]
        (fine,) = torch.autograd.grad(pixel, gen.levels[0])
        assert 1 <= int((fine != 0).sum()) <= 4 * 3 * 1 and int((fine[0, 1] != 0).sum()) <= 4
        opt = torch.optim.Adam(gen.levels.parameters(), lr=0.1)
        for _ in range(40):
            opt.zero_grad()
            image = gen.render_views(cams, ["albedo"]).image
            ((image - target) ** 2 * covered).sum().backward()
            opt.step()
        with torch.no_grad():
            image = gen.render_views(cams, ["albedo"]).image
        errors[size] = float(((image - target).abs() * covered).sum() / (3 * covered.sum()))
    assert errors[512] < 0.06 and errors[64] > 2 * errors[512], errors


def test_a_latent_prior_textures_the_mesh(tmp_path: Path, cube_file, published_model) -> None:
    """Stable Diffusion's format (tests/fixtures, made small): renders go through its VAE encoder."""
    model = published_model("sd15")
    out = tmp_path / "run"
    args = ["generate", "a red hamburger", "--generator", "texture", "--set", f"generator.mesh={cube_file('.ply')}"]
    args += ["--guidance", "stable-diffusion", "--set", f"guidance.model={model}", "--set", "guidance.resolution=null"]
    args += ["--steps", "2", "--device", "cpu", "--preset", "draft", "--out", str(out), *SMALL]
    result = _cli([*args, "--set", "cameras.width=64", "--set", "cameras.height=64", "--set", "run.preview_every=0"])
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(np.isfinite(m["loss"]) for m in metrics)
    assert (out / "final" / "mesh.glb").stat().st_size > 0


def test_sds_shapes_writes_an_objects_true_mesh(tmp_path: Path) -> None:
    """`python -m sds_shapes.true_mesh`: the cube exactly (12 faces, y-up), a curved shape closed."""
    pytest.importorskip("skimage")
    true_mesh = pytest.importorskip("sds_shapes.true_mesh")
    import trimesh

    cube = trimesh.load(true_mesh.write_true_mesh("a green cube", tmp_path / "cube.ply"), process=False)
    assert len(cube.faces) == 12 and np.allclose(np.abs(cube.vertices), 0.22) and cube.volume > 0
    torus = true_mesh.true_mesh(true_mesh.parse_prompt("a blue torus").obj, resolution=24)
    assert torus.is_watertight and torus.volume > 0
    assert np.ptp(torus.vertices[:, 0]) < 0.25 < np.ptp(torus.vertices[:, 2])  # axis along world x; y-up file z = -y
    done = subprocess.run([sys.executable, "-m", "sds_shapes.true_mesh", "a plaid cube", str(tmp_path / "x.ply")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "cannot draw" in done.stderr and "Traceback" not in done.stderr
