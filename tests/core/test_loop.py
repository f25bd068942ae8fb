"""The loop: run folder, metrics, previews, checkpoints, bit-exact resume, interruption."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from sds_core.errors import ConfigError, RunInterrupted, SdsError
from sds_core.events import ArtifactWritten, StepFinished
from sds_core.lifecycle import is_finished, resume_run, start_run
from sds_core.run import RunFolder

NAMES = {"generator": "image", "guidance": "target"}


def overrides(steps: int, **run: int) -> dict:
    return {"run": {"steps": steps, "preview_every": 4, "checkpoint_every": 3, **run}, "cameras": {"width": 8}}


def params(trainer) -> torch.Tensor:
    return trainer.generator.param.detach().clone()


def test_run_writes_the_run_folder(tmp_path, catalog) -> None:
    events = []
    trainer = start_run("a thing", tmp_path / "run", "draft", overrides(8), NAMES, "cpu", [events.append], catalog)
    outputs = trainer.run()
    folder = RunFolder(tmp_path / "run")
    config = folder.read_config()
    assert config["prompt"] == "a thing" and config["config"]["run"]["steps"] == 8
    assert config["plugins"]["guidance"] == {"name": "target", "provider": "sds-tests", "version": "0"}
    metrics = folder.read_metrics()
    assert [m["step"] for m in metrics] == list(range(1, 9))
    assert {"loss", "sds", "t", "lr", "time_render", "time_guidance", "time_backward", "time_optimizer"} <= set(
        metrics[0]
    )
    assert sorted(p.name for p in folder.previews.iterdir()) == ["step-000004.png", "step-000008.png"]
    assert outputs == [folder.final / "image.png"] and outputs[0].stat().st_size > 0
    assert folder.last_checkpoint.exists() and is_finished(folder.root)
    assert not [p for p in folder.ckpt_dir.iterdir() if p.name.endswith(".tmp")]
    steps = [e.step for e in events if isinstance(e, StepFinished)]
    assert steps == list(range(1, 9))
    assert any(isinstance(e, ArtifactWritten) and e.kind == "checkpoint" for e in events)


def test_sds_on_an_image_converges_to_the_guidance_target(tmp_path, catalog) -> None:
    trainer = start_run(
        "x", tmp_path / "run", "paper", {"run": {"steps": 300, "preview_every": 0}}, NAMES, "cpu", [], catalog
    )
    trainer.run()
    error = (trainer.generator.image() * 2 - 1 - trainer.guidance.cond_target).abs().mean()
    assert error < 0.05


def test_resume_is_bit_exact(tmp_path, catalog) -> None:
    straight = start_run("x", tmp_path / "a", "draft", overrides(10), NAMES, "cpu", [], catalog)
    straight.run()
    half = start_run("x", tmp_path / "b", "draft", overrides(5), NAMES, "cpu", [], catalog)
    half.run()
    resumed = resume_run(tmp_path / "b", "cpu", catalog=catalog, steps=10)
    assert resumed.step == 5
    resumed.run()
    assert torch.equal(params(straight), params(resumed))
    assert [m["loss"] for m in RunFolder(tmp_path / "a").read_metrics()] == [
        m["loss"] for m in RunFolder(tmp_path / "b").read_metrics()
    ]


def test_interrupted_run_leaves_a_checkpoint_that_resumes(tmp_path, catalog) -> None:
    straight = start_run("x", tmp_path / "a", "draft", overrides(10), NAMES, "cpu", [], catalog)
    straight.run()

    def interrupt(event) -> None:
        if isinstance(event, StepFinished) and event.step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    run = start_run("x", tmp_path / "b", "draft", overrides(10), NAMES, "cpu", [interrupt], catalog)
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN in background jobs, Python's handler otherwise
    with pytest.raises(RunInterrupted) as info:
        run.run()
    assert info.value.step == 4
    folder = RunFolder(tmp_path / "b")
    assert folder.last_checkpoint.exists() and not is_finished(folder.root)
    assert signal.getsignal(signal.SIGINT) == handler_before  # the handler is restored
    resumed = resume_run(tmp_path / "b", "cpu", catalog=catalog)
    assert resumed.step == 4
    resumed.run()
    assert torch.equal(params(straight), params(resumed))
    assert [m["step"] for m in folder.read_metrics()] == list(range(1, 11))


def test_start_refuses_an_existing_run_and_resume_needs_one(tmp_path, catalog) -> None:
    start_run("x", tmp_path / "a", "draft", overrides(1), NAMES, "cpu", [], catalog).run()
    with pytest.raises(ConfigError, match="already holds a run"):
        start_run("x", tmp_path / "a", "draft", overrides(1), NAMES, "cpu", [], catalog)
    with pytest.raises(SdsError, match="holds no run"):
        resume_run(tmp_path / "nothing", "cpu", catalog=catalog)
    with pytest.raises(ConfigError, match="prompt is empty"):
        start_run("  ", tmp_path / "c", "draft", overrides(1), NAMES, "cpu", [], catalog)


def test_unknown_device_is_a_clear_error(tmp_path, catalog) -> None:
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        start_run("x", tmp_path / "a", "draft", overrides(1), NAMES, "tpu", [], catalog)


def test_a_step_whose_loss_reaches_no_parameter_is_skipped_not_a_crash(tmp_path, catalog, monkeypatch) -> None:
    """A render detached from every parameter (an emptied field, say) makes a loss without a graph:
    the step leaves the parameters as they are and the run goes on."""
    trainer = start_run("x", tmp_path / "run", "draft", overrides(4), NAMES, "cpu", [], catalog)
    render = trainer.generator.render

    def detached(cameras, step):
        out = render(cameras, step)
        out.image = out.image.detach()
        return out

    monkeypatch.setattr(trainer.generator, "render", detached)
    before = params(trainer)
    trainer.train_step()
    assert trainer.step == 1 and torch.equal(params(trainer), before)
