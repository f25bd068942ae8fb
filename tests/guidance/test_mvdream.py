"""The `mvdream` guidance on the published MVDream port's architecture made small
(tests/fixtures/configs/mvdream-sd21-4view.json, tests/guidance/mvdream_models.py), saved in the
port's layout (LDM config keys and weight names) and loaded from the folder offline; joint
self-attention over the views, the camera embedding, and `sds generate` on nerf and gaussians."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import torch

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_core.errors import ConfigError, SdsError
from sds_core.protocols import Guidance, Render
from sds_guidance.config import MVDreamConfig
from sds_guidance.mvdream import (
    MultiViewAttnProcessor,
    MVDreamGuidance,
    camera_condition,
    diffusers_state,
    join_views,
    unet_config,
)
from tests.fixtures.published import published
from tests.guidance.mvdream_models import published_names, tiny_config

BLOCK = "transformer_blocks.0"
# names of the port's UNet state dict (LDM openaimodel names), as MVDream's checkpoint has them
PUBLISHED = {
    "time_embed.0.weight": "time_embedding.linear_1.weight",
    "time_embed.2.bias": "time_embedding.linear_2.bias",
    "camera_embed.0.weight": "class_embedding.linear_1.weight",
    "camera_embed.2.weight": "class_embedding.linear_2.weight",
    "input_blocks.0.0.weight": "conv_in.weight",
    "input_blocks.1.0.in_layers.0.weight": "down_blocks.0.resnets.0.norm1.weight",
    "input_blocks.1.0.emb_layers.1.weight": "down_blocks.0.resnets.0.time_emb_proj.weight",
    f"input_blocks.1.1.{BLOCK}.attn1.to_q.weight": f"down_blocks.0.attentions.0.{BLOCK}.attn1.to_q.weight",
    "input_blocks.1.1.proj_in.weight": "down_blocks.0.attentions.0.proj_in.weight",
    "input_blocks.2.0.op.weight": "down_blocks.0.downsamplers.0.conv.weight",
    "input_blocks.3.0.skip_connection.weight": "down_blocks.1.resnets.0.conv_shortcut.weight",
    f"middle_block.1.{BLOCK}.attn2.to_k.weight": f"mid_block.attentions.0.{BLOCK}.attn2.to_k.weight",
    "middle_block.2.out_layers.3.weight": "mid_block.resnets.1.conv2.weight",
    "output_blocks.1.1.conv.weight": "up_blocks.0.upsamplers.0.conv.weight",
    f"output_blocks.3.1.{BLOCK}.ff.net.0.proj.weight": f"up_blocks.1.attentions.1.{BLOCK}.ff.net.0.proj.weight",
    "output_blocks.5.2.conv.weight": "up_blocks.2.upsamplers.0.conv.weight",
    "out.0.weight": "conv_norm_out.weight",
    "out.2.bias": "conv_out.bias",
}


@pytest.fixture(scope="session")
def mvdream_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.guidance.mvdream_models import build

    return build(tmp_path_factory.mktemp("mvdream-sd21-4view"))


@pytest.fixture
def guidance(mvdream_model, context_factory) -> MVDreamGuidance:
    return MVDreamGuidance(MVDreamConfig(model=str(mvdream_model)), context_factory("a red cube"))


def _cameras(n: int = 4, seed: int = 0):
    cfg = CameraConfig(width=16, height=16, batch_size=n, views_per_object=4)
    return CameraSampler(cfg).sample(generator=torch.Generator().manual_seed(seed))


def test_the_published_config_is_sd21_base_with_the_camera_mlp() -> None:
    """The port's config translates to SD 2.1-base's UNet (tests/fixtures/configs/sd21-base.json)
    with diffusers' projection class embedding: Linear 16 -> 1280, SiLU, Linear 1280 -> 1280."""
    from diffusers import UNet2DConditionModel

    config = unet_config(published("mvdream-sd21-4view")["unet"])
    sd21 = published("sd21-base")["unet"]
    for key in (
        "block_out_channels",
        "down_block_types",
        "up_block_types",
        "attention_head_dim",
        "cross_attention_dim",
    ):
        assert config[key] == sd21[key], key
    assert config["use_linear_projection"] and config["layers_per_block"] == 2 and config["sample_size"] == 32
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    mlp = unet.class_embedding
    assert (mlp.linear_1.in_features, mlp.linear_1.out_features, mlp.linear_2.out_features) == (16, 1280, 1280)
    assert isinstance(mlp.act, torch.nn.SiLU) and not unet.config.class_embeddings_concat


def test_key_map_on_a_published_name_state_dict() -> None:
    """A tiny state dict under the port's names maps onto diffusers' UNet, every tensor in place;
    an original checkpoint's `model.diffusion_model.` prefix too; a missing tensor is one sentence."""
    from diffusers import UNet2DConditionModel

    config = unet_config(tiny_config()["unet"])
    torch.manual_seed(0)
    state = UNet2DConditionModel.from_config(config).state_dict()
    port = published_names(state, config)
    assert len(port) == len(state) and set(PUBLISHED) <= set(port)
    for name, diffusers_name in PUBLISHED.items():
        assert port[name] is state[diffusers_name], name
    mapped = diffusers_state(port, config)
    assert set(mapped) == set(state) and all(mapped[k] is state[k] for k in state)
    prefixed = diffusers_state({"model.diffusion_model." + k: v for k, v in port.items()}, config)
    assert set(prefixed) == set(state)
    del port["camera_embed.2.weight"]
    with pytest.raises(SdsError, match="lack"):
        diffusers_state(port, config)


def test_loads_and_predicts_with_the_camera(guidance: MVDreamGuidance) -> None:
    """The prediction is the UNet's own with the cameras as its projected class labels (both
    branches); other cameras give another prediction."""
    assert isinstance(guidance, Guidance)
    assert (guidance.space, guidance.channels, guidance.resolution, guidance.latent_resolution) == ("latent", 4, 32, 4)
    assert guidance.default_guidance_scale == 50.0 and guidance.prediction_type == "epsilon"
    cams = _cameras()
    camera = camera_condition(cams)
    torch.testing.assert_close(camera.view(4, 4, 4)[:, :3, 3].norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(camera.view(4, 4, 4)[:, :3, :3], cams.c2w[:, :3, :3])
    x = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    render = Render(image=x, space="latent")
    t = torch.full((4,), 500)
    cond = guidance.condition(render, cams)
    assert cond.prompts == ["a red cube"] * 4  # no view suffixes: the camera tells the view
    prediction = guidance.predict_noise(x, t, cond)
    with torch.no_grad():
        states = torch.cat([cond.cond, cond.uncond])
        want = guidance.unet(x.repeat(2, 1, 1, 1), t.repeat(2), states, class_labels=camera.repeat(2, 1)).sample
    torch.testing.assert_close(torch.cat([prediction.cond, prediction.uncond]), want)
    other = _cameras(seed=5)
    moved = guidance.predict_noise(x, t, guidance.condition(render, other))
    assert (moved.cond - prediction.cond).abs().max() > 1e-4  # the camera embedding reaches the UNet
    with pytest.raises(ConfigError, match=r"batch has 3; set cameras\.batch_size to a multiple of 4"):
        guidance.condition(Render(image=x[:3], space="latent"), cams[0:3])


def test_views_attend_to_each_other(guidance: MVDreamGuidance) -> None:
    """Changing view 2 changes view 1's prediction with joint self-attention, and not without it;
    cross-attention layers keep their own processor."""
    unet = guidance.unet
    processors = unet.attn_processors
    assert all(isinstance(p, MultiViewAttnProcessor) == n.endswith("attn1.processor") for n, p in processors.items())
    cams = _cameras()
    x = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    changed = x.clone()
    changed[1] += 1.0
    t = torch.full((4,), 300)
    states = guidance.condition(Render(image=x, space="latent"), cams).cond
    camera = camera_condition(cams)

    def predict(latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return unet(latents, t, states, class_labels=camera).sample  # type: ignore[no-any-return]

    joint, joint_changed = predict(x), predict(changed)
    assert (joint_changed[0] - joint[0]).abs().max() > 1e-4
    join_views(unet, 1)
    try:
        alone, alone_changed = predict(x), predict(changed)
    finally:
        join_views(unet, 4)
    torch.testing.assert_close(alone_changed[0], alone[0], atol=1e-6, rtol=0)
    assert (alone_changed[1] - alone[1]).abs().max() > 1e-4
    torch.testing.assert_close(predict(x), joint)  # back to joint attention


def test_the_cameras_must_draw_its_views(mvdream_model, context_factory) -> None:
    config = MVDreamConfig(model=str(mvdream_model))
    context = context_factory("a red cube", {"cameras": {"views_per_object": 1}})
    with pytest.raises(ConfigError, match=r"set cameras.views_per_object=4"):
        MVDreamGuidance(config, context)


def _generate(args: list[str]):
    from typer.testing import CliRunner

    from sds_cli.app import app

    return CliRunner().invoke(app, args)


SMALL = ["--preset", "draft", "--set", "cameras.width=16", "--set", "cameras.height=16", "--device", "cpu"]
SMALL += ["--set", 'generator.export_formats=["ply"]']
EXTRA = {"nerf": ["--set", "generator.mesh_resolution=24", "--set", "generator.mesh_threshold=1.0"], "gaussians": []}


@pytest.mark.parametrize("generator", ["nerf", "gaussians"])
def test_generate_multi_view(mvdream_model, tmp_path, generator) -> None:
    """Two multi-view steps (4 views of one object) on each 3D generator, offline."""
    pytest.importorskip(f"sds_{generator}")
    out = tmp_path / "run"
    args = ["generate", "a red cube", "--guidance", "mvdream", "--generator", generator]
    args += ["--set", f"guidance.model={mvdream_model}", "--steps", "2", "--out", str(out), *SMALL]
    result = _generate([*args, *EXTRA[generator]])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(math.isfinite(m["loss"]) for m in metrics)
    cameras = json.loads((out / "config.json").read_text())["config"]["cameras"]
    assert cameras["views_per_object"] == 4 and cameras["batch_size"] == 4


def test_a_batch_of_partial_objects_is_one_sentence(mvdream_model, tmp_path) -> None:
    out = tmp_path / "refused"
    args = ["generate", "a red cube", "--guidance", "mvdream", "--set", f"guidance.model={mvdream_model}"]
    args += ["--set", "cameras.batch_size=6", "--steps", "1", "--device", "cpu", "--out", str(out)]
    result = _generate(args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    assert "not a multiple of cameras.views_per_object=4" in result.stderr


def test_a_damaged_port_folder_is_one_sentence(mvdream_model, context_factory, tmp_path) -> None:
    """A weight missing from unet/, or a unet/ that is not a MultiViewUNetModel, is one sentence."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "damaged"
    shutil.copytree(mvdream_model, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    del state["output_blocks.0.0.out_layers.3.weight"]
    save_file(state, str(weights))
    with pytest.raises(SdsError, match=r"lack up_blocks\.0\.resnets\.0\.conv2\.weight \(1 missing, 0 unknown\)"):
        MVDreamGuidance(MVDreamConfig(model=str(folder)), context_factory("a red cube"))
    config = folder / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(SdsError, match="not MVDream's MultiViewUNetModel"):
        MVDreamGuidance(MVDreamConfig(model=str(folder)), context_factory("a red cube"))
    with pytest.raises(SdsError, match="hub cannot be reached"):
        MVDreamGuidance(MVDreamConfig(model="someone/not-downloaded-mvdream"), context_factory("a red cube"))
