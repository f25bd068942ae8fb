"""The `mesh` generator end to end: plugin, CLI run, export, starting from a run's mesh."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sds_core.lifecycle import start_run
from sds_core.plugins import Catalog

# small exports: the point is that every artefact is written and loads, not its quality
SMALL = [
    "--set",
    "generator.texture_size=64",
    "--set",
    "generator.video_frames=3",
    "--set",
    "generator.video_resolution=32",
]


def test_plugin_is_listed_and_cheap_to_import(catalog: Catalog) -> None:
    spec = catalog.get("generator", "mesh")
    assert spec.provider == "sds-mesh"
    assert {"default", "paper", "draft"} <= set(spec.presets)
    code = "import sys, sds_mesh.plugin, sds_mesh.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sds_plugins_lists_mesh() -> None:
    typer_testing = pytest.importorskip("typer.testing")
    from sds_cli.app import app

    result = typer_testing.CliRunner().invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    rows = rows if isinstance(rows, list) else [r for v in rows.values() for r in v]
    assert any(r.get("name") == "mesh" and r.get("package", r.get("provider")) == "sds-mesh" for r in rows)


def test_generate_red_cube_draft_writes_a_glb_trimesh_loads(tmp_path: Path) -> None:
    """`sds generate "a red cube" --generator mesh --guidance shapes --preset draft`, shortened."""
    typer_testing = pytest.importorskip("typer.testing")
    pytest.importorskip("sds_shapes")
    trimesh = pytest.importorskip("trimesh")
    from sds_cli.app import app

    out = tmp_path / "run"
    args = ["generate", "a red cube", "--generator", "mesh", "--guidance", "shapes", "--preset", "draft"]
    args += ["--steps", "6", "--out", str(out), "--device", "cpu", "--set", "run.preview_every=3", *SMALL]
    result = typer_testing.CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    mesh = trimesh.load(out / "final" / "mesh.glb", force="mesh")
    assert len(mesh.faces) == 1280  # the draft icosphere: 3 subdivisions
    for name in ("mesh.obj", "mesh.mtl", "mesh.ply", "turntable.mp4", "index.html"):
        assert (out / "final" / name).stat().st_size > 0, name
    record = json.loads((out / "config.json").read_text())
    assert record["plugins"]["generator"]["provider"] == "sds-mesh"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 6 and {"laplacian", "normal_consistency", "edge_length"} <= set(metrics[0])


def test_second_stage_starts_from_a_run_mesh(tmp_path: Path, catalog: Catalog) -> None:
    """generator.init=RUN_DIR reads RUN_DIR/final/mesh.ply back into world (z-up) coordinates."""
    small = {"texture_size": 32, "export_formats": ["ply"], "subdivisions": 1}
    run = {"steps": 3, "preview_every": 0, "checkpoint_every": 0}
    names = {"generator": "mesh", "guidance": "target"}
    cams = {"width": 8, "height": 8}  # the target guidance's side
    overrides = {"generator": small, "run": run, "cameras": cams}
    first = start_run("a test", tmp_path / "a", "draft", overrides, names, "cpu", catalog=catalog)
    first.run()
    verts = first.generator.vertices().detach()
    assert float(first.generator.offsets.abs().max()) > 0  # it moved
    overrides = {"generator": {**small, "init": str(tmp_path / "a")}, "run": run, "cameras": cams}
    second = start_run("a test", tmp_path / "b", "draft", overrides, names, "cpu", catalog=catalog)
    assert torch.allclose(second.generator.base_vertices, verts, atol=1e-5)
    assert torch.equal(second.generator.faces, first.generator.faces)
    colors = second.generator.colors().detach()
    assert torch.allclose(colors, first.generator.colors().detach().clamp(0.02, 0.98), atol=1 / 255 + 1e-4)
    # the second stage moves vertices at optim.lr x refine_lr_scale; colours as the first stage
    lrs = [[group["lr"] for group in t.optimizer.param_groups[:2]] for t in (first, second)]
    assert lrs[1][0] == pytest.approx(lrs[0][0] * second.generator.cfg.refine_lr_scale)
    assert lrs[1][1] == pytest.approx(lrs[0][1])


def test_regularisers_penalise_a_noisy_surface(catalog: Catalog, tmp_path: Path) -> None:
    names = {"generator": "mesh", "guidance": "target"}
    trainer = start_run("a test", tmp_path, "draft", {"generator": {"smoothness": 0.0}}, names, "cpu", catalog=catalog)
    gen = trainer.generator
    cams = trainer.cameras.sample()
    render = gen.render(cams, 0)
    smooth = {k: float(v.detach()) for k, v in gen.regularizers(render, cams, 0).items()}
    with torch.no_grad():
        gen.offsets.add_(torch.randn_like(gen.offsets) * 0.02)
    noisy = {k: float(v.detach()) for k, v in gen.regularizers(render, cams, 0).items()}
    assert set(smooth) == {"laplacian", "normal_consistency", "edge_length"}
    assert all(noisy[k] > 2 * smooth[k] for k in smooth)
    assert render.opacity is not None and render.shading == ["albedo"]
    assert render.image.shape == (1, 3, 48, 48) and float(render.image.min()) >= 0.0
