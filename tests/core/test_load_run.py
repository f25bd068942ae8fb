"""`load_run`: a run loaded for inference builds its generator from the checkpoint, never its
guidance's model (unless latents must be decoded), no loss or optimiser, and keeps the RNG."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sds_core.checkpoint import load_checkpoint
from sds_core.hookspecs import hookimpl
from sds_core.lifecycle import load_run, start_run
from sds_core.plugins import Catalog, PluginSpec, load_catalog

from ..conftest import TargetConfig, TargetPlugin


class Unloadable:
    """The `target` guidance whose model cannot be loaded (as a Stable Diffusion run on a machine
    without its weights): any attempt to build it fails the test."""

    def __init__(self, config: TargetConfig, context: object) -> None:
        raise AssertionError("the guidance was built")


class UnloadablePlugin:
    @hookimpl
    def sds_register_guidance(self, registry):
        registry.add(PluginSpec("target", Unloadable, TargetConfig, "A guidance that cannot be loaded."))


def _catalogs() -> tuple[Catalog, Catalog]:
    working = load_catalog(extra_plugins={"target-plugin": (TargetPlugin(), "sds-tests", "0")})
    failing = load_catalog(extra_plugins={"target-plugin": (UnloadablePlugin(), "sds-tests", "0")})
    return working, failing


def _image_run(tmp_path: Path, catalog: Catalog) -> Path:
    names = {"generator": "image", "guidance": "target"}
    overrides = {"run": {"steps": 3, "preview_every": 0}}
    start_run("a test", tmp_path, "draft", overrides, names, device="cpu", catalog=catalog).run()
    return tmp_path


def test_loaded_run_renders_and_exports_without_building_the_guidance(tmp_path: Path) -> None:
    working, failing = _catalogs()
    run_dir = _image_run(tmp_path / "run", working)
    trained = load_checkpoint(run_dir / "ckpts" / "last.pt")
    (run_dir / "final" / "image.png").unlink()

    torch.manual_seed(7)
    before = torch.get_rng_state()
    run = load_run(run_dir, "cpu", catalog=failing)
    assert torch.equal(torch.get_rng_state(), before)  # no reseeding, no draws
    assert run.step == 3 and run.prompt == "a test" and not run.generator.training
    assert run.facts.space == "rgb" and run.facts.resolution == TargetConfig().side and run.facts.background is None
    assert torch.equal(run.generator.param, trained["generator"]["param"])
    assert not hasattr(run, "optimizer") and not hasattr(run, "loss")
    outputs = run.export()
    assert [p.name for p in outputs] == ["image.png"] and outputs[0].stat().st_size > 0
    with pytest.raises(AssertionError, match="the guidance was built"):
        run.guidance()  # only built when asked for: here it would fail


def test_a_checkpoint_without_guidance_facts_builds_the_guidance(tmp_path: Path) -> None:
    working, failing = _catalogs()
    run_dir = _image_run(tmp_path / "run", working)
    path = run_dir / "ckpts" / "last.pt"
    payload = load_checkpoint(path)
    del payload["guidance"]  # as a checkpoint written before runs recorded what the generator read
    torch.save(payload, path)
    assert load_run(run_dir, "cpu", catalog=working).facts.resolution == TargetConfig().side
    with pytest.raises(AssertionError, match="the guidance was built"):
        load_run(run_dir, "cpu", catalog=failing)
