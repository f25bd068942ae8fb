"""End to end: the loop drives the `nerf` generator and writes the run folder of docs/design.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sds_core.loop import start_run
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


def test_plugin_is_registered_and_cheap_to_import(catalog: Catalog) -> None:
    spec = catalog.get("generator", "nerf")
    assert spec.provider == "sds-nerf"
    assert {"default", "paper", "draft"} <= set(spec.presets)
    import subprocess
    import sys

    code = "import sys, sds_nerf.plugin, sds_nerf.config; assert not {'torch', 'nerfacc'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_draft_run_with_a_test_guidance_writes_the_run_folder(tmp_path: Path, catalog: Catalog) -> None:
    overrides = {
        # the test guidance's targets are random pixels; the draft's voxel field keeps its blob
        # over 8 steps, and SMALL_EXPORT's level 1 finds it
        "generator": {
            **SMALL_EXPORT,
            "albedo_only_steps": 3,
            "occupancy_warmup": 2,
            "occupancy_update_every": 2,
        },
        "run": {"steps": 8, "preview_every": 4, "checkpoint_every": 4},
        "cameras": {"width": 8, "height": 8},
    }
    names = {"generator": "nerf", "guidance": "target"}
    trainer = start_run("a test", tmp_path, "draft", overrides, names, device="cpu", catalog=catalog)
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
