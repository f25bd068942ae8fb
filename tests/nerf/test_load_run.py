"""`sds export` of a NeRF run rebuilds final/ from the checkpoint without building its guidance."""

from __future__ import annotations

from pathlib import Path

import torch

from sds_core.lifecycle import load_run, start_run
from sds_core.plugins import Catalog, load_catalog

from ..core.test_load_run import UnloadablePlugin
from .test_end_to_end import SMALL_EXPORT


def test_nerf_run_exports_without_its_guidance(tmp_path: Path, catalog: Catalog) -> None:
    overrides = {
        "generator": {**SMALL_EXPORT, "occupancy_warmup": 2, "occupancy_update_every": 2},
        "run": {"steps": 4, "preview_every": 0},
        "cameras": {"width": 8, "height": 8},
    }
    names = {"generator": "nerf", "guidance": "target"}
    start_run("a test", tmp_path, "draft", overrides, names, device="cpu", catalog=catalog).run()
    before = {p.name: p.read_bytes() for p in (tmp_path / "final").iterdir() if p.suffix in (".ply", ".obj")}
    failing = load_catalog(extra_plugins={"target-plugin": (UnloadablePlugin(), "sds-tests", "0")})
    state = torch.get_rng_state()
    run = load_run(tmp_path, "cpu", catalog=failing, lock=True)
    try:
        outputs = run.export(formats=("obj", "ply", "gif"))
    finally:
        run.release()
    assert torch.equal(torch.get_rng_state(), state)
    assert {p.name for p in outputs} >= {"mesh.obj", "mesh.ply", "turntable.gif"}
    # the same generator state gives the same surface as the training run's export
    assert {name: (tmp_path / "final" / name).read_bytes() for name in before} == before
