"""End to end: the loop drives the `nerf` generator and writes the run folder of docs/design.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sds_core.lifecycle import start_run
from sds_core.plugins import Catalog

# small exports: the point is that every artefact is written, not its quality
SMALL_EXPORT = {
    "mesh_resolution": 40,
    "texture_size": 128,
    "video_frames": 4,
    "video_resolution": 32,
    # a short run has not grown an opaque object yet: a low level still finds its surface
    "mesh_threshold": 1.0,
}


def target_run(tmp_path: Path, catalog: Catalog, generator: dict, steps: int, **run: int) -> Any:
    """A `nerf` draft run on the known-answer `target` guidance at 8 x 8 pixels."""
    overrides = {
        "generator": generator,
        "run": {"steps": steps, "preview_every": 0, "checkpoint_every": 0, **run},
        "cameras": {"width": 8, "height": 8},
    }
    names = {"generator": "nerf", "guidance": "target"}
    return start_run("a test", tmp_path, "draft", overrides, names, device="cpu", catalog=catalog)


def test_plugin_is_registered_and_cheap_to_import(catalog: Catalog) -> None:
    spec = catalog.get("generator", "nerf")
    assert spec.provider == "sds-nerf"
    assert {"default", "paper", "draft"} <= set(spec.presets)
    import subprocess
    import sys

    code = "import sys, sds_nerf.plugin, sds_nerf.config; assert not {'torch', 'nerfacc'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_draft_run_with_a_test_guidance_writes_the_run_folder(tmp_path: Path, catalog: Catalog) -> None:
    # the test guidance's targets are random pixels; the draft's voxel field keeps its blob
    # over 8 steps, and SMALL_EXPORT's level 1 finds it
    generator = {**SMALL_EXPORT, "albedo_only_steps": 3, "occupancy_warmup": 2, "occupancy_update_every": 2}
    trainer = target_run(tmp_path, catalog, generator, 8, preview_every=4, checkpoint_every=4)
    trainer.run()
    final = tmp_path / "final"
    for name in ("mesh.glb", "mesh.obj", "mesh.ply", "turntable.mp4", "turntable.gif", "index.html"):
        assert (final / name).stat().st_size > 0, name
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 8 and "opacity" in metrics[0] and "time_render" in metrics[0]
    assert any("orientation" in m for m in metrics[3:])  # shaded renders after the albedo-only steps


def test_draft_red_cube_with_the_shapes_prior(tmp_path: Path) -> None:
    """The README's demo, `sds generate "a red cube" --guidance shapes --preset draft`, shortened."""
    pytest.importorskip("sds_shapes")
    overrides = {"generator": SMALL_EXPORT, "run": {"steps": 10, "preview_every": 5, "checkpoint_every": 5}}
    trainer = start_run(
        "a red cube", tmp_path, "draft", overrides, {"generator": "nerf", "guidance": "shapes"}, device="cpu"
    )
    assert trainer.resolved.specs["generator"].name == "nerf"  # the default generator
    trainer.run()
    final = tmp_path / "final"
    for name in ("mesh.glb", "turntable.mp4", "index.html"):
        assert (final / name).stat().st_size > 0, name
    assert (tmp_path / "ckpts" / "last.pt").exists() and any((tmp_path / "previews").iterdir())


def test_resumed_ipe_run_renders_what_training_rendered(tmp_path: Path, catalog: Catalog) -> None:
    """The IPE anneal is restored with the run: an orbit rendered after `resume_run` (what export
    and evaluation render) equals the one rendered by the trainer that wrote the checkpoint."""
    from sds_core.lifecycle import resume_run

    generator = {"field": "mlp", "encoding": "ipe", "hidden": 16, "blocks": 1, "ipe_anneal_steps": 8}
    trainer = target_run(tmp_path, catalog, generator, 20)
    trainer.folder.root.mkdir(parents=True, exist_ok=True)
    trainer.write_config()
    for _ in range(4):
        trainer.train_step()
    trainer.save_checkpoint()
    orbit = trainer.cameras.orbit(3, width=12, height=12)
    trainer.generator.eval()
    before = trainer.generator.preview(orbit, trainer.step)
    if trainer.lock is not None:
        trainer.lock.release()  # as the first process would on exit
    resumed = resume_run(tmp_path, device="cpu", catalog=catalog)
    resumed.generator.eval()
    after = resumed.generator.preview(orbit, resumed.step)
    assert resumed.step == 4
    assert torch.equal(before, after)
    resumed.generator.field.set_step(0)  # the encoding of another step renders differently
    assert not torch.allclose(resumed.generator.preview(orbit, 0), before, atol=1e-4)


def test_a_field_that_empties_keeps_training(tmp_path: Path, catalog: Catalog) -> None:
    """An occupancy grid that culled every cell leaves a render without samples: the generator
    resets the grid and renders again, so the step trains the field instead of crashing in backward."""
    # a solid background leaves nothing else to differentiate: the crash of the issue
    generator = {"blob": "none", "density_bias": -30.0, "background": "solid", "occupancy_warmup": 0}
    trainer = target_run(tmp_path, catalog, {**generator, "occupancy_update_every": 1}, 3)
    gen = trainer.generator
    gen.grid.update(gen.field.density)
    assert gen.grid.occupied_fraction() == 0.0  # the field is empty: every cell culled
    before = gen.field.grid.detach().clone()
    events = [trainer.train_step() for _ in range(3)]
    assert all(e.terms.get("occupancy_reset") == 1.0 for e in events)
    assert all(e.terms["samples_per_ray"] > 0 for e in events)
    assert not torch.equal(gen.field.grid, before)  # the field received gradients
