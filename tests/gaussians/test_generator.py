"""The `gaussians` generator end to end: plugin, CLI run, densification with the optimiser's
state, bit-exact resume across a densification step, geometry for `sds eval geometry`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sds_core.lifecycle import resume_run, start_run
from sds_core.plugins import Catalog
from sds_core.run import RunFolder

NAMES = {"generator": "gaussians", "guidance": "shapes"}
# small runs: 200 Gaussians at 16 px, a coarse mesh grid, every artefact cheap
SMALL = {
    "generator": {
        "num_points": 200,
        "densify_every": 3,
        "grad_threshold": 0.0,  # every drawn Gaussian is densified: the count must change
        "max_gaussians": 300,
        "mesh_resolution": 24,
        "texture_size": 32,
        "video_frames": 2,
        "video_resolution": 16,
        "export_formats": ["ply"],
    },
    "cameras": {"width": 16, "height": 16},
    "run": {"preview_every": 0, "checkpoint_every": 4},
}


def small(steps: int) -> dict:
    return {**SMALL, "run": {**SMALL["run"], "steps": steps}}


def state(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.generator.state_dict().items()}


def test_plugin_is_listed_and_cheap_to_import(catalog: Catalog) -> None:
    spec = catalog.get("generator", "gaussians")
    assert spec.provider == "sds-gaussians"
    assert {"default", "paper", "draft"} <= set(spec.presets)
    code = "import sys, sds_gaussians.plugin, sds_gaussians.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_densify_and_prune_keeps_the_optimizer_in_step() -> None:
    """Clone the small, split the large, prune the faint: survivors keep their rows and Adam
    moments (in order), clones copy their originals with zero moments, split samples are
    smaller by 0.8 x 2 and start with zero moments."""
    from sds_gaussians.config import GaussianConfig
    from sds_gaussians.gaussians import PARAMETERS, GaussianModel

    torch.manual_seed(0)
    g = GaussianModel(GaussianConfig(num_points=6, percent_dense=0.01, extent=4.0, min_opacity=0.01))
    optimizer = torch.optim.Adam([getattr(g, name) for name in PARAMETERS], lr=0.01)
    sum(getattr(g, name).sum() * (i + 1) for i, name in enumerate(PARAMETERS)).backward()
    optimizer.step()
    with torch.no_grad():
        g.log_scales[:] = torch.log(torch.tensor([0.01, 0.01, 0.01, 0.2, 0.2, 0.01]))[:, None]
        g.opacity_logits[5] = -10.0  # faint: pruned
    g.grad_accum[:] = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])  # 0 is cloned, 3 split
    g.grad_count[:] = 1.0
    before = {name: getattr(g, name).detach().clone() for name in PARAMETERS}
    moments = {name: optimizer.state[getattr(g, name)]["exp_avg"].clone() for name in PARAMETERS}
    counts = g.densify_and_prune(optimizer)
    assert counts == {"cloned": 1, "split": 1, "pruned": 1}
    assert g.count == 6 + 1 + 2 - 1 - 1  # survivors 0, 1, 2, 4; a clone of 0; two samples of 3
    survivors = [0, 1, 2, 4]
    for name in PARAMETERS:
        param, state = getattr(g, name), optimizer.state[getattr(g, name)]
        assert state["exp_avg"].shape == param.shape == state["exp_avg_sq"].shape
        assert torch.equal(param.detach()[:4], before[name][survivors])
        assert torch.equal(state["exp_avg"][:4], moments[name][survivors])
        assert float(state["exp_avg"][4:].abs().sum()) == 0.0 and float(state["exp_avg_sq"][4:].abs().sum()) == 0.0
        assert torch.equal(param.detach()[4], before[name][0])  # the clone
    assert torch.allclose(g.scales()[5:], torch.full((2, 3), 0.2 / 1.6))
    assert float((g.means.detach()[5:] - before["means"][3]).norm(dim=-1).max()) < 4 * 0.2
    assert g.grad_accum.shape == (g.count,) and float(g.grad_accum.abs().sum()) == 0.0  # statistics restart


def test_training_densifies_on_schedule(tmp_path: Path, catalog: Catalog) -> None:
    pytest.importorskip("sds_shapes")
    trainer = start_run("a red cube", tmp_path / "run", "draft", small(3), NAMES, "cpu", [], catalog)
    g = trainer.generator.gaussians
    trainer.train_step()
    trainer.train_step()
    assert g.count == 200
    trainer.train_step()  # step 3: every drawn Gaussian is chosen, up to the cap of 300
    assert 200 < g.count <= 300
    trainer.train_step()  # the optimiser steps with the new count
    assert trainer.optimizer.state[g.means]["exp_avg"].shape == g.means.shape


def test_opacity_reset_clamps_and_zeroes_the_moments(tmp_path: Path, catalog: Catalog) -> None:
    pytest.importorskip("sds_shapes")
    overrides = small(2)
    overrides["generator"] = {**overrides["generator"], "densify_every": 0, "opacity_reset_every": 2,
                              "init_opacity": 0.5}  # fmt: skip
    trainer = start_run("a red cube", tmp_path / "run", "draft", overrides, NAMES, "cpu", [], catalog)
    trainer.train_step()
    trainer.train_step()
    g = trainer.generator.gaussians
    assert float(g.opacities().detach().max()) <= 0.01 + 1e-6
    assert float(trainer.optimizer.state[g.opacity_logits]["exp_avg"].abs().sum()) == 0.0


@pytest.fixture
def two_threads():
    """At least two intra-op threads: threaded kernels (atomic adds in an indexing backward) are
    where bits vary from run to run, and CI machines differ in their defaults."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(before, 2))
    yield
    torch.set_num_threads(before)


def test_resume_is_bit_exact_across_densification(tmp_path: Path, catalog: Catalog, two_threads: None) -> None:
    """Checkpoint at step 4 (densified at 3), densify again at 6: the resumed run ends equal."""
    pytest.importorskip("sds_shapes")
    straight = start_run("a red cube", tmp_path / "a", "draft", small(8), NAMES, "cpu", [], catalog)
    straight.run()
    half = start_run("a red cube", tmp_path / "b", "draft", small(4), NAMES, "cpu", [], catalog)
    half.run()
    counts = [m["gaussians"] for m in RunFolder(tmp_path / "a").read_metrics()]
    assert counts[2] == counts[0] and counts[3] != counts[2]  # the count changed after step 3
    resumed = resume_run(tmp_path / "b", "cpu", catalog=catalog, steps=8)
    assert resumed.step == 4 and resumed.generator.gaussians.count == counts[4]
    resumed.run()
    a, b = state(straight), state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [m["loss"] for m in RunFolder(tmp_path / "a").read_metrics()] == [
        m["loss"] for m in RunFolder(tmp_path / "b").read_metrics()
    ]


def test_generate_red_cube_draft_writes_the_splat_ply_and_a_mesh(tmp_path: Path) -> None:
    """`sds generate "a red cube" --generator gaussians --guidance shapes --preset draft`, shortened."""
    typer_testing = pytest.importorskip("typer.testing")
    pytest.importorskip("sds_shapes")
    trimesh = pytest.importorskip("trimesh")
    from sds_cli.app import app

    out = tmp_path / "run"
    args = ["generate", "a red cube", "--generator", "gaussians", "--guidance", "shapes", "--preset", "draft"]
    args += ["--steps", "4", "--out", str(out), "--device", "cpu", "--set", "cameras.width=16"]
    for setting in ("cameras.height=16", "generator.mesh_resolution=32", "generator.texture_size=32",
                    "generator.video_frames=2", "generator.video_resolution=16"):  # fmt: skip
        args += ["--set", setting]
    result = typer_testing.CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    final = out / "final"
    cloud = trimesh.load(final / "gaussians.ply")
    names = cloud.metadata["_ply_raw"]["vertex"]["data"].dtype.names
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    expected += [f"f_rest_{i}" for i in range(45)] + ["opacity", "scale_0", "scale_1", "scale_2"]
    expected += ["rot_0", "rot_1", "rot_2", "rot_3"]
    assert list(names) == expected
    assert len(cloud.vertices) == json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["gaussians"]
    mesh = trimesh.load(final / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 0
    for name in ("mesh.obj", "mesh.ply", "turntable.mp4", "index.html"):
        assert (final / name).stat().st_size > 0


def test_an_unusable_init_or_rasterizer_is_one_sentence(tmp_path: Path) -> None:
    typer_testing = pytest.importorskip("typer.testing")
    pytest.importorskip("sds_shapes")
    from sds_cli.app import app

    base = ["generate", "a red cube", "--generator", "gaussians", "--guidance", "shapes", "--preset", "draft"]
    base += ["--steps", "1", "--device", "cpu"]
    for setting, words in (
        (f"generator.init={tmp_path / 'missing'}", "neither 'sphere' nor"),
        ("generator.rasterizer=gsplat", "needs a CUDA device"),
    ):
        result = typer_testing.CliRunner().invoke(app, [*base, "--out", str(tmp_path / "o"), "--set", setting])
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output


def test_init_from_a_run_samples_its_mesh(tmp_path: Path, catalog: Catalog) -> None:
    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("sds_shapes")
    run = tmp_path / "mesh-run"
    (run / "final").mkdir(parents=True)
    box = trimesh.creation.box(extents=(0.4, 0.4, 0.4))
    box.visual.vertex_colors = [255, 0, 0, 255]
    box.export(run / "final" / "mesh.ply")
    overrides = small(1)
    overrides["generator"] = {**overrides["generator"], "init": str(run)}
    trainer = start_run("a red cube", tmp_path / "run", "draft", overrides, NAMES, "cpu", [], catalog)
    g = trainer.generator.gaussians
    assert g.count == 200
    assert torch.allclose(g.means.detach().abs().max(-1).values, torch.full((200,), 0.2), atol=1e-5)  # on the box
    colors = g.colors().detach()
    assert float(colors[:, 0].min()) > 0.9 and float(colors[:, 1].max()) < 0.1


def test_density_field_feeds_sds_eval_geometry(tmp_path: Path, catalog: Catalog) -> None:
    pytest.importorskip("sds_eval")
    pytest.importorskip("skimage")
    from sds_core.api import DensityField
    from sds_eval.geometry import run_geometry

    trainer = start_run("a red cube", tmp_path / "run", "draft", small(2), NAMES, "cpu", [], catalog)
    trainer.run()
    assert isinstance(trainer.generator, DensityField)
    metrics = run_geometry(tmp_path / "run", resolution=24)
    assert 0.0 <= metrics["iou"] <= 1.0 and metrics["level"] == 1.0


def test_positions_follow_dreamgaussians_learning_rate_decay(tmp_path: Path, catalog: Catalog) -> None:
    """Step i (from 1) moves the means at 1e-3^(1 - i/300) 2e-5^(i/300) (3DGS's get_expon_lr_func)."""
    pytest.importorskip("sds_shapes")
    from sds_gaussians.gaussians import exponential_lr

    assert exponential_lr(0, 1e-3, 2e-5, 300) == pytest.approx(1e-3)
    assert exponential_lr(150, 1e-3, 2e-5, 300) == pytest.approx((1e-3 * 2e-5) ** 0.5)
    assert exponential_lr(300, 1e-3, 2e-5, 300) == exponential_lr(900, 1e-3, 2e-5, 300) == pytest.approx(2e-5)
    trainer = start_run("a red cube", tmp_path / "run", "draft", small(3), NAMES, "cpu", [], catalog)
    for i in range(1, 4):
        trainer.train_step()
        (means,) = [g for g in trainer.optimizer.param_groups if g.get("name") == "means"]
        assert means["lr"] == pytest.approx(exponential_lr(i, 1e-3, 2e-5, 300))


def test_each_view_is_shaded_with_its_own_mode() -> None:
    """A batch of views with different modes (textureless included, `sds_3d.shading`) renders each
    view as a batch of that view alone does."""
    from sds_core.api import BuildContext, CameraConfig, CameraSampler
    from sds_gaussians.config import GaussianConfig
    from sds_gaussians.generator import GaussianGenerator

    torch.manual_seed(0)
    cfg = GaussianConfig(num_points=100, background="solid")
    gen = GaussianGenerator(cfg, BuildContext(torch.device("cpu"), "a ball", 10)).eval()
    cams = CameraSampler(CameraConfig(width=12, height=12)).sample(3, torch.Generator().manual_seed(0))
    modes = ["textureless", "albedo", "lambertian"]
    with torch.no_grad():
        batch = gen.render_views(cams, modes)[0].image
        alone = [gen.render_views(cams[i], [mode])[0].image for i, mode in enumerate(modes)]
    for i in range(3):
        assert torch.allclose(batch[i : i + 1], alone[i], atol=1e-6), modes[i]
    assert not torch.allclose(batch[0], batch[1], atol=1e-3)  # the modes differ
