"""The parts of a DeepFloyd IF stage-I model, in IF's format, sized for the shapes world.

The fields that are not sizes are IF-I-XL's as published (tests/fixtures/configs/if-i-xl.json):
the UNet's block types, GELU, scale-shift time conditioning, group-norm cross attention, the T5
text projection and attention pooling (`addition_embed_type = "text"`), 6 output channels
(epsilon and the learned variance interpolation); the T5 v1.1 encoder (gated GELU); the
scheduler (cosine betas, learned range, dynamic thresholding). `save_folder` writes the layout
that `IFPipeline.from_pretrained` and the `deepfloyd-if` backend read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sds_core.api import VIEWS
from sds_shapes.world import COLOURS, PRIMITIVES, SYNONYMS
from sds_shapes_learned.config import TrainConfig

SCHEDULER: dict[str, Any] = {
    "beta_schedule": "squaredcos_cap_v2",
    "dynamic_thresholding_ratio": 0.95,
    "prediction_type": "epsilon",
    "sample_max_value": 1.5,
    "thresholding": True,
    "variance_type": "learned_range",
}


def tokenizer() -> Any:
    """A T5 (SentencePiece Unigram) tokenizer built offline: the world's words are one piece
    each (so "a red cube, side view" is 7 tokens), anything else falls back to letters."""
    from transformers import T5Tokenizer

    words = ["a", "an", "the", "view", *COLOURS, *PRIMITIVES, *SYNONYMS, *VIEWS]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -1.0) for w in dict.fromkeys(words)]
    pieces += [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.-'"]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def unet_config(cfg: TrainConfig, text_width: int) -> dict[str, Any]:
    """IF-I-XL's UNet fields with its widths, depth and side narrowed to `cfg`."""
    levels = len(cfg.unet_channels)
    return {
        "act_fn": "gelu",
        "addition_embed_type": "text",
        "addition_embed_type_num_heads": 2,
        "attention_head_dim": cfg.attention_head_dim,
        "block_out_channels": list(cfg.unet_channels),
        "class_embed_type": None,
        "cross_attention_dim": cfg.unet_channels[-1],
        "cross_attention_norm": "group_norm",
        "down_block_types": ["ResnetDownsampleBlock2D"] + ["SimpleCrossAttnDownBlock2D"] * (levels - 1),
        "encoder_hid_dim": text_width,
        "encoder_hid_dim_type": "text_proj",
        "in_channels": 3,
        "layers_per_block": cfg.layers_per_block,
        "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
        "norm_num_groups": 8,
        "out_channels": 6,
        "projection_class_embeddings_input_dim": None,
        "resnet_time_scale_shift": "scale_shift",
        "sample_size": cfg.resolution,
        "up_block_types": ["SimpleCrossAttnUpBlock2D"] * (levels - 1) + ["ResnetUpsampleBlock2D"],
        "upcast_attention": False,
        "use_linear_projection": False,
    }


def t5_config(cfg: TrainConfig, vocab: int) -> dict[str, Any]:
    """T5 v1.1-XXL's encoder fields (IF's text encoder) with its sizes narrowed to `cfg`."""
    return {
        "d_model": cfg.t5_width,
        "d_ff": cfg.t5_width * 5 // 2,  # T5-XXL's 10240 / 4096
        "d_kv": cfg.t5_width // cfg.t5_heads,
        "num_heads": cfg.t5_heads,
        "num_layers": cfg.t5_layers,
        "num_decoder_layers": cfg.t5_layers,
        "vocab_size": vocab,
        "dense_act_fn": "gelu_new",
        "feed_forward_proj": "gated-gelu",
        "is_gated_act": True,
        "dropout_rate": 0.1,
        "layer_norm_epsilon": 1e-6,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "tie_word_embeddings": False,
    }


def build(cfg: TrainConfig) -> tuple[Any, Any, Any, Any]:
    """(tokenizer, text_encoder, unet, scheduler) with fresh weights from the current torch seed."""
    import diffusers
    import transformers

    tok = tokenizer()
    encoder = transformers.T5EncoderModel(transformers.T5Config(**t5_config(cfg, len(tok))))
    unet = diffusers.UNet2DConditionModel.from_config(unet_config(cfg, cfg.t5_width))
    scheduler = diffusers.DDPMScheduler.from_config(SCHEDULER)
    return tok, encoder, unet, scheduler


def save_folder(folder: Path, tok: Any, encoder: Any, unet: Any, scheduler: Any) -> Path:
    """Save the parts as an IF stage-I pipeline folder (safetensors)."""
    import diffusers

    pipe: Any = diffusers.IFPipeline(
        tokenizer=tok,
        text_encoder=encoder,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder
