"""Tiny SD3 medium, SD 3.5 medium and FLUX.1-dev pipelines: the published architectures
(tests/fixtures/configs/sd3-medium.json, sd35-medium.json, flux1-dev.json) with only widths,
depths, spatial size and vocabulary shrunk, built with random weights (seed 0) and saved with
`save_pretrained`, as tests/fixtures/published.py does for the UNet models (whose shrink of CLIP,
the VAE and the tokenizers this reuses).

T5 is divided by 16 here (IF's by 128): SD3 pads CLIP's 768 + 1280 channels to T5's width, and
FLUX's pooled CLIP row is stored beside T5's states, so T5 must stay the widest encoder, as published.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tests.fixtures.published import (
    NORM_GROUPS,
    SPATIAL,
    VAE_WIDTH,
    _clip_text,
    _fewer,
    _fields,
    clip_tokenizer,
    published,
    t5_tokenizer,
)

FLOW = ("sd3-medium", "sd35-medium", "flux1-dev")
T5_DIVISOR = 16  # d_model 4096 -> 256, d_ff 10240 -> 640; 64 heads of 64 -> 4 of 8
HEAD_DIM = {
    "sd3-medium": 8,
    "sd35-medium": 8,
    "flux1-dev": 32,
}  # 64 -> 8; FLUX 128 -> 32 (rope axes 16/56/56 -> 4/14/14)
HEADS = 2  # 24 attention heads -> 2
POS_EMBED_DIVISOR = 8  # SD3's pos_embed_max_size 192 -> 24 (>= the tiny latent's 8 patches a side)

#: the fields the shrink may change, per component; every other field is the published one
SHRUNK = {
    "transformer": {
        "attention_head_dim",
        "num_attention_heads",
        "num_layers",
        "num_single_layers",
        "caption_projection_dim",
        "joint_attention_dim",
        "pooled_projection_dim",
        "pos_embed_max_size",
        "sample_size",
        "axes_dims_rope",
        "dual_attention_layers",
    },
    "vae": {"block_out_channels", "layers_per_block", "norm_num_groups", "sample_size"},
    "text_encoder": {"hidden_size", "intermediate_size", "num_hidden_layers", "projection_dim", "vocab_size"},
    "t5": {"d_model", "d_ff", "d_kv", "num_heads", "num_layers", "num_decoder_layers", "vocab_size"},
}


def _t5(cfg: dict[str, Any]) -> dict[str, Any]:
    for key in ("d_model", "d_ff"):
        cfg[key] //= T5_DIVISOR
    cfg["d_kv"] //= 8
    cfg["num_heads"] //= 16
    cfg["num_layers"] = cfg["num_decoder_layers"] = 1
    cfg["vocab_size"] = len(t5_tokenizer())
    return cfg


def tiny_config(name: str) -> dict[str, Any]:
    """`published(name)` with only widths, depths, spatial size and vocabulary shrunk."""
    cfg = copy.deepcopy(published(name))
    vocab = len(clip_tokenizer())
    clips = [cfg[k] for k in ("text_encoder", "text_encoder_2") if cfg[k]["_class_name"].startswith("CLIP")]
    for clip in clips:
        _clip_text(clip, vocab)
    sd3 = name != "flux1-dev"
    t5 = _t5(cfg["text_encoder_3" if sd3 else "text_encoder_2"])
    vae = cfg["vae"]
    widths = vae["block_out_channels"]
    vae["block_out_channels"] = [VAE_WIDTH * w // widths[0] for w in widths]
    vae["layers_per_block"] = _fewer(vae["layers_per_block"], 2)
    vae["norm_num_groups"] = NORM_GROUPS["vae"]
    vae["sample_size"] //= SPATIAL
    tr = cfg["transformer"]
    head = HEAD_DIM[name]
    tr["attention_head_dim"], tr["num_attention_heads"] = head, HEADS
    tr["num_layers"] = 1
    tr["joint_attention_dim"] = t5["d_model"]
    if sd3:
        # SD 3.5's MMDiT-X: the dual attention of the first layers, kept for the layers that remain
        tr["dual_attention_layers"] = [i for i in tr["dual_attention_layers"] if i < tr["num_layers"]]
        tr["caption_projection_dim"] = head * HEADS  # the joint blocks' width (1536 = 24 x 64)
        tr["pooled_projection_dim"] = sum(c["projection_dim"] for c in clips)  # 768 + 1280
        tr["pos_embed_max_size"] //= POS_EMBED_DIVISOR
        tr["sample_size"] //= SPATIAL
    else:
        tr["num_single_layers"] = 1
        tr["pooled_projection_dim"] = clips[0]["hidden_size"]  # CLIP L's pooled output
        tr["axes_dims_rope"] = [a * head // sum(tr["axes_dims_rope"]) for a in tr["axes_dims_rope"]]
    return cfg


def build(name: str, folder: Path) -> Path:
    """Build the tiny `name` with random weights (seed 0) and save it to `folder`."""
    import diffusers
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = tiny_config(name)
    transformer = getattr(diffusers, cfg["transformer"]["_class_name"]).from_config(_fields(cfg["transformer"]))
    parts: dict[str, Any] = {
        "transformer": transformer,
        "scheduler": diffusers.FlowMatchEulerDiscreteScheduler.from_config(_fields(cfg["scheduler"])),
        "vae": diffusers.AutoencoderKL.from_config(_fields(cfg["vae"])),
    }
    for index, suffix in enumerate(("", "_2", "_3")):
        text = cfg.get(f"text_encoder{suffix}")
        if text is None:
            continue
        kind = text["_class_name"]
        if kind == "T5EncoderModel":
            parts[f"text_encoder{suffix}"] = transformers.T5EncoderModel(transformers.T5Config(**_fields(text)))
            parts[f"tokenizer{suffix}"] = t5_tokenizer()
        else:
            tokenizer = cfg[f"tokenizer{suffix}"]
            parts[f"tokenizer{suffix}"] = clip_tokenizer(tokenizer["model_max_length"], tokenizer["pad_token"])
            cls = getattr(transformers, kind)  # CLIPTextModel or CLIPTextModelWithProjection
            parts[f"text_encoder{suffix}"] = cls(transformers.CLIPTextConfig(**_fields(text)))
        assert index < 3
    getattr(diffusers, cfg["pipeline"])(**parts).save_pretrained(folder)
    return folder
