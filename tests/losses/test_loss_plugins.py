"""The loss axis end to end: registration, capabilities, VSD's own state, runs from the command line."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from sds_core.errors import ConfigError
from sds_core.lifecycle import resume_run, start_run
from sds_core.losses.family_config import NFSDConfig, VSDConfig
from sds_core.losses.nfsd import NFSDLoss
from sds_core.losses.vsd import VSDLoss
from sds_core.protocols import NegativePrompting, TrainableCopy, TrainableLoss
from sds_core.run import RunFolder
from tests.conftest import TargetConfig, TargetGuidance

from .conftest import context

FAMILY = ["csd", "nfsd", "ism", "sjc", "vsd"]


def test_a_guidance_without_negative_prompts_is_refused_in_one_sentence() -> None:
    guidance = TargetGuidance(TargetConfig())
    assert not isinstance(guidance, NegativePrompting)
    with pytest.raises(ConfigError, match=r"'nfsd' loss needs .*NegativePrompting.*TargetGuidance"):
        NFSDLoss(NFSDConfig(), context(guidance=guidance))
    with pytest.raises(ConfigError, match=r"'vsd' loss needs .*TrainableCopy"):
        VSDLoss(VSDConfig(phi="lora"), context(guidance=guidance))


def test_shapes_negative_prompt_is_the_named_object_or_every_other(shapes_guidance: Any) -> None:
    from sds_core.protocols import Render

    render = Render(image=torch.rand(1, 3, 16, 16), shading=["albedo"])
    cond = shapes_guidance.condition(render, None)
    other = shapes_guidance.negative_condition(cond, "unrealistic, blurry")
    named = shapes_guidance.negative_condition(cond, "a blue cone")
    assert not (cond.masks[0] & other.masks[0]).any() and bool((cond.masks[0] | other.masks[0]).all())
    ref = shapes_guidance._reference_set("albedo")
    assert named.masks[0].sum() == shapes_guidance.config.views and not (named.masks[0] & cond.masks[0]).any()
    assert bool((ref.primitive[named.masks[0]] == ref.primitive[named.masks[0]][0]).all())


def test_sd_negative_prompt_is_encoded_before_the_first_prediction(make_sd: Any) -> None:
    guidance = make_sd()
    assert isinstance(guidance, NegativePrompting) and isinstance(guidance, TrainableCopy)
    loss = NFSDLoss(NFSDConfig(negative_prompt="blurry"), context(guidance=guidance))  # registers the text
    from sds_core.protocols import Render

    render = Render(image=torch.randn(1, 4, 8, 8), space="latent")
    cond = guidance.condition(render, None)
    loss(render.image, guidance, cond, step=0)
    negative = guidance.negative_condition(cond, "blurry")
    assert negative.prompts == ["blurry"] and not torch.equal(negative.cond, cond.cond)
    with pytest.raises(RuntimeError, match="before the first noise prediction"):
        guidance.negative_condition(cond, "a text never registered")


@pytest.mark.parametrize("backend", ["sd", "if"])
def test_vsd_lora_copy_starts_as_the_prior_and_trains_only_adapters_and_camera(backend, make_sd, make_if) -> None:
    guidance = make_sd() if backend == "sd" else make_if()
    loss = VSDLoss(VSDConfig(lora_rank=2), context(guidance=guidance))
    trainable = [n for n, p in loss.phi.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n or "class_embedding" in n for n in trainable)
    assert all(not p.requires_grad for p in guidance.unet.parameters())
    from sds_core.protocols import Render

    x_t = torch.randn(2, guidance.channels, guidance.latent_resolution, guidance.latent_resolution)
    t = torch.tensor([300, 600])
    cond = guidance.condition(Render(image=x_t, space=guidance.space), None)
    with torch.no_grad():
        torch.testing.assert_close(
            loss.phi(x_t, t, cond, torch.randn(2, 16)), guidance.predict_noise(x_t, t, cond).cond
        )
    phi_loss = loss.phi_loss(x_t, guidance, cond)
    phi_loss.backward()
    assert all(p.grad is not None for p in loss.phi.parameters() if p.requires_grad)


def test_vsd_residual_phi_is_what_the_shapes_prior_gets(shapes_guidance: Any) -> None:
    loss = VSDLoss(VSDConfig(phi_lr=3e-3), context(guidance=shapes_guidance))
    assert loss.kind == "residual" and isinstance(loss, TrainableLoss)
    (group,) = loss.param_groups()
    assert group["lr"] == 3e-3 and len(group["params"]) == len(list(loss.phi.parameters()))
    with pytest.raises(ConfigError, match="TrainableCopy"):
        VSDLoss(VSDConfig(phi="lora"), context(guidance=shapes_guidance))


def test_vsd_state_is_checkpointed_and_resume_is_bit_exact(tmp_path, catalog) -> None:
    names = {"generator": "image", "guidance": "target", "loss": "vsd"}

    def overrides(steps: int) -> dict:
        run = {"steps": steps, "preview_every": 0, "checkpoint_every": 3}
        return {"run": run, "cameras": {"width": 8}, "loss": {"phi_lr": 0.01, "residual_width": 8}}

    straight = start_run("x", tmp_path / "a", "draft", overrides(8), names, "cpu", [], catalog)
    straight.run()
    assert len(straight.optimizer.param_groups) == 2 and straight.optimizer.param_groups[1]["base_lr"] == 0.01
    half = start_run("x", tmp_path / "b", "draft", overrides(4), names, "cpu", [], catalog)
    half.run()
    payload = torch.load(RunFolder(tmp_path / "b").last_checkpoint, weights_only=False)
    assert set(payload["loss"]["phi"]) == {n for n, _ in half.loss.phi.named_parameters()}
    assert all(isinstance(v, torch.Tensor) for v in payload["loss"]["phi"].values())
    resumed = resume_run(tmp_path / "b", "cpu", catalog=catalog, steps=8)
    resumed.run()
    assert torch.equal(straight.generator.param, resumed.generator.param)
    for p, q in zip(straight.loss.phi.parameters(), resumed.loss.phi.parameters(), strict=True):
        assert torch.equal(p, q)
    pairs = zip(straight.loss.phi.parameters(), half.loss.phi.parameters(), strict=True)
    moved = [not torch.equal(p, q) for p, q in pairs]
    assert any(moved)  # eps_phi trained on


def test_plugins_lists_the_family_and_generate_runs_each(tmp_path) -> None:
    pytest.importorskip("typer")
    from typer.testing import CliRunner

    from sds_cli.app import app

    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["plugins", "--json"]).stdout)
    assert {"sds", *FAMILY} <= {entry["name"] for entry in listed["loss"]}
    for name in FAMILY:
        out = tmp_path / name
        args = ["generate", "a red cube", "--loss", name, "--guidance", "shapes", "--preset", "draft"]
        result = runner.invoke(app, [*args, "--steps", "3", "--device", "cpu", "--out", str(out)])
        assert result.exit_code == 0, result.output
        last = RunFolder(out).read_metrics()[-1]
        assert last["step"] == 3 and name in last


def test_nfsd_on_a_guidance_without_negatives_exits_2(tmp_path, install_entry_point) -> None:
    pytest.importorskip("typer")
    from typer.testing import CliRunner

    from sds_cli.app import app

    code = "from tests.conftest import TargetPlugin\nplugin = TargetPlugin()\n"
    install_entry_point("sds-target", "sds_target_plugin_losses", code, attr="plugin")
    args = ["generate", "x", "--generator", "image", "--guidance", "target", "--loss", "nfsd", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "needs predictions under a negative prompt" in result.output and "Traceback" not in result.output
