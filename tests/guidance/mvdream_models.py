"""The tiny MVDream of tests/fixtures/configs/mvdream-sd21-4view.json: the published port's layout
(ashawkey/mvdream-sd2.1-diffusers: a `MultiViewUNetModel` config with LDM keys and LDM weight
names in `unet/`, SD 2.1-base's vae, text encoder, tokenizer and a DDIM scheduler config) with only
widths, depths and the latent side shrunk, as tests/fixtures/published.py shrinks SD 2.1-base.

The UNet's random weights are made by diffusers' `UNet2DConditionModel` of `unet_config` (the
backend's translation) and saved under the port's LDM names by `published_names`, written here
independently of the backend (which maps back with diffusers' own converter), so a wrong map in
either direction fails the load."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.fixtures.published import (
    NORM_GROUPS,
    SPATIAL,
    UNET_WIDTH,
    _clip_text,
    _fewer,
    _fields,
    _vae,
    clip_tokenizer,
    published,
)

NAME = "mvdream-sd21-4view"
HEAD_CHANNELS = 8  # SD 2's 64 channels a head; published.py's tiny SD 2 has 8 (2:4:8:8 heads)

_RESNET = {  # diffusers ResnetBlock2D -> LDM ResBlock
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def tiny_config() -> dict[str, Any]:
    """The published config with the UNet's width, depth, head width and latent side shrunk (the
    ratios kept), the text encoder and VAE as published.py shrinks SD 2.1-base's; the camera stays
    16 values. `norm_num_groups` is added: LDM's GroupNorm32 needs 32 channels, more than the tiny
    widths have."""
    cfg = copy.deepcopy(published(NAME))
    _clip_text(cfg["text_encoder"], len(clip_tokenizer()))
    unet = cfg["unet"]
    unet["model_channels"] = UNET_WIDTH
    unet["num_res_blocks"] = _fewer(unet["num_res_blocks"], 2)
    unet["num_head_channels"] = HEAD_CHANNELS
    unet["context_dim"] = cfg["text_encoder"]["hidden_size"]
    unet["image_size"] //= SPATIAL
    unet["norm_num_groups"] = NORM_GROUPS["unet"]
    _vae(cfg["vae"])
    return cfg


def published_names(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A diffusers `UNet2DConditionModel` state dict (of `unet_config`'s `config`) under the port's
    LDM names: conv_in -> input_blocks.0.0, down block b's layer l -> input_blocks.{1 + b(L+1) + l}.{0
    resnet, 1 attention}, its downsampler -> input_blocks.{(b+1)(L+1)}.0.op, mid -> middle_block.{0,1,2},
    up block b's layer l -> output_blocks.{b(L+1) + l}, its upsampler -> .{1 or 2}.conv,
    time_embedding -> time_embed.{0,2}, class_embedding -> camera_embed.{0,2}, conv_norm_out / conv_out
    -> out.{0,2}; resnet parts by `_RESNET`, attention parts keep their names."""
    per = config["layers_per_block"] + 1
    up_attention = ["CrossAttn" in kind for kind in config["up_block_types"]]
    out: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        head, rest = parts[0], parts[1:]
        if head in ("time_embedding", "class_embedding"):
            top = "time_embed" if head == "time_embedding" else "camera_embed"
            name = f"{top}.{0 if rest[0] == 'linear_1' else 2}.{rest[1]}"
        elif head in ("conv_in", "conv_norm_out", "conv_out"):
            name = {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}[head] + "." + rest[0]
        elif head == "mid_block":
            kind, index = rest[0], int(rest[1])
            block = 1 if kind == "attentions" else 2 * index
            name = _inner(f"middle_block.{block}", kind, rest[2:])
        else:
            block, kind, index = int(rest[0]), rest[1], int(rest[2])
            if head == "down_blocks":
                if kind == "downsamplers":
                    name = f"input_blocks.{(block + 1) * per}.0.op.{rest[-1]}"
                else:
                    name = _inner(f"input_blocks.{1 + block * per + index}", kind, rest[3:])
            elif kind == "upsamplers":
                name = f"output_blocks.{block * per + per - 1}.{2 if up_attention[block] else 1}.conv.{rest[-1]}"
            else:
                name = _inner(f"output_blocks.{block * per + index}", kind, rest[3:])
        out[name] = value
    return out


def _inner(prefix: str, kind: str, rest: list[str]) -> str:
    if kind == "attentions":
        return f"{prefix}.1.{'.'.join(rest)}" if not prefix.startswith("middle") else f"{prefix}.{'.'.join(rest)}"
    return f"{prefix}{'' if prefix.startswith('middle') else '.0'}.{_RESNET[rest[0]]}.{rest[1]}"


def build(folder: Path) -> Path:
    """The tiny model with random weights (seed 0), saved to `folder` in the port's layout."""
    import diffusers
    import torch
    import transformers
    from safetensors.torch import save_file

    from sds_guidance.mvdream import unet_config

    torch.manual_seed(0)
    cfg = tiny_config()
    port = cfg["unet"]
    translated = unet_config(port)
    unet = diffusers.UNet2DConditionModel.from_config(translated)
    with torch.no_grad():  # diffusers zero-initialises no camera layer, but give it weight to be seen
        for p in unet.class_embedding.parameters():
            p.normal_(0.0, 0.5)
    state = {k: v.detach().contiguous() for k, v in unet.state_dict().items()}
    (folder / "unet").mkdir(parents=True)
    save_file(published_names(state, translated), str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    (folder / "unet" / "config.json").write_text(json.dumps({**_fields(port), "_class_name": port["_class_name"]}))
    diffusers.AutoencoderKL.from_config(_fields(cfg["vae"])).save_pretrained(folder / "vae")
    scheduler = getattr(diffusers, cfg["scheduler"]["_class_name"]).from_config(_fields(cfg["scheduler"]))
    scheduler.save_pretrained(folder / "scheduler")
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**_fields(cfg["text_encoder"])))
    text.save_pretrained(folder / "text_encoder")
    tokenizer = cfg["tokenizer"]
    clip_tokenizer(tokenizer["model_max_length"], tokenizer["pad_token"]).save_pretrained(folder / "tokenizer")
    index = {"_class_name": cfg["pipeline"], "_diffusers_version": diffusers.__version__}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder
