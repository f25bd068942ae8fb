"""The parts of a Stable Diffusion 3 model, in SD3's format, sized for the shapes world (`--format sd3`).

The fields that are not sizes are SD3 medium's as published (tests/fixtures/configs/sd3-medium.json):
the MMDiT (`SD3Transformer2DModel`: patch size 2, joint attention of text and image tokens, 16 latent
channels in and out, no dual attention, no QK norm), the 16-channel `AutoencoderKL` (four levels, a
downscale of 8, no quant convs, a scaling and a shift factor), the two CLIP text towers with their
projections (`CLIPTextModelWithProjection`: ViT-L's quick GELU, bigG's GELU; the second tokenizer
pads with "!"), and the `FlowMatchEulerDiscreteScheduler` (1,000 steps, `flow_shift`, SD3 medium's
3.0). T5 is absent: `save_folder` writes text_encoder_3 / tokenizer_3 as None, and the text states
hold T5's `t5_tokens` as zeros, as `StableDiffusion3Pipeline` makes them without T5 (and the
`stable-diffusion-3` backend with `drop_t5`). `encode` is the pipeline's `encode_prompt` for the two
CLIPs (penultimate states concatenated, padded to `joint_attention_dim`; pooled projections
concatenated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sds_core.api import ConfigError
from sds_shapes_learned import sd_model
from sds_shapes_learned.config import TrainConfig

# SD3 medium's scheduler_config.json, with `shift` from the config (`flow_shift`)
SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000}
# SD3's pos_embed_max_size (192) over its transformer's patches a side (128 latents / 2): the
# positional table covers three times the trained side, so larger renders still embed
POS_EMBED_RATIO = 3


def vae_config(cfg: TrainConfig) -> dict[str, Any]:
    """SD3's AutoencoderKL fields (16 latent channels, no quant convs) on the SD format's narrowed
    levels; `scaling_factor` and `shift_factor` are set from the trained encoder's latents."""
    return {
        **sd_model.vae_config(cfg),
        "force_upcast": True,
        "latent_channels": 16,
        "latents_mean": None,
        "latents_std": None,
        "mid_block_add_attention": True,
        "scaling_factor": 1.5305,  # SD3 medium's, replaced when the stage ends
        "shift_factor": 0.0609,
        "use_post_quant_conv": False,
        "use_quant_conv": False,
    }


def transformer_config(cfg: TrainConfig) -> dict[str, Any]:
    """SD3 medium's SD3Transformer2DModel fields with its widths, depth and side narrowed to `cfg`."""
    side = cfg.resolution // sd_model.latent_downscale(cfg)
    return {
        "attention_head_dim": cfg.mmdit_head_dim,
        "caption_projection_dim": cfg.mmdit_head_dim * cfg.mmdit_heads,  # the joint blocks' width
        "dual_attention_layers": [],
        "in_channels": 16,
        "joint_attention_dim": cfg.joint_attention_dim,
        "num_attention_heads": cfg.mmdit_heads,
        "num_layers": cfg.mmdit_layers,
        "out_channels": 16,
        "patch_size": cfg.patch_size,
        "pooled_projection_dim": cfg.clip_width + cfg.openclip_width,  # CLIP L's + CLIP G's projections
        "pos_embed_max_size": POS_EMBED_RATIO * side // cfg.patch_size,
        "qk_norm": None,
        "sample_size": side,
    }


def clip_configs(cfg: TrainConfig, vocab: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """CLIP L's and CLIP G's text tower fields (SD3's, with projections) narrowed to `cfg`."""
    clip_l = sd_model.clip_config(cfg, vocab)
    clip_g = {
        **clip_l,
        "hidden_act": "gelu",  # OpenCLIP bigG's
        "hidden_size": cfg.openclip_width,
        "intermediate_size": cfg.openclip_width * 4,  # 5120 / 1280
        "num_hidden_layers": cfg.openclip_layers,
        "projection_dim": cfg.openclip_width,
    }
    return clip_l, clip_g


def tokenizers() -> tuple[Any, Any]:
    """SD3's two CLIP tokenizers: the SD format's offline BPE, padded with the end token and with "!"."""
    return sd_model.tokenizer(), sd_model.tokenizer(pad_token="!")


def build_vae(cfg: TrainConfig) -> Any:
    """The 16-channel autoencoder with fresh weights from the current torch seed."""
    import diffusers

    return diffusers.AutoencoderKL.from_config(vae_config(cfg))


def scheduler(cfg: TrainConfig) -> Any:
    """SD3's flow-matching Euler scheduler with the configured time shift."""
    import diffusers

    return diffusers.FlowMatchEulerDiscreteScheduler.from_config({**SCHEDULER, "shift": cfg.flow_shift})


def build(cfg: TrainConfig) -> tuple[Any, Any, Any, Any]:
    """(tokenizers, text encoders, transformer, scheduler) with fresh weights from the current torch
    seed; the two CLIPs in one `ModuleList` (trained, saved and averaged as one encoder)."""
    import diffusers
    import transformers

    if cfg.clip_width + cfg.openclip_width > cfg.joint_attention_dim:
        raise ConfigError(
            f"joint_attention_dim ({cfg.joint_attention_dim}) must hold both CLIPs' states "
            f"(clip_width + openclip_width = {cfg.clip_width + cfg.openclip_width}), as T5's width holds them in SD3"
        )
    toks = tokenizers()
    configs = clip_configs(cfg, len(toks[0]))
    encoders = torch.nn.ModuleList(
        [transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**c)) for c in configs]
    )
    transformer = diffusers.SD3Transformer2DModel.from_config(transformer_config(cfg))
    return toks, encoders, transformer, scheduler(cfg)


def encode(cfg: TrainConfig, encoders: Any, ids: list[Tensor]) -> tuple[Tensor, Tensor]:
    """(text states, pooled) of token ids (one tensor per CLIP), as `StableDiffusion3Pipeline.encode_prompt`
    without T5: the penultimate states of both CLIPs concatenated and zero-padded to the joint width,
    then `t5_tokens` zero tokens; the projected pooled outputs concatenated."""
    hidden, pooled = [], []
    for encoder, tokens in zip(encoders, ids, strict=True):
        out = encoder(tokens, output_hidden_states=True)
        pooled.append(out[0])  # text_embeds
        hidden.append(out.hidden_states[-2])
    clip = F.pad(torch.cat(hidden, dim=-1), (0, cfg.joint_attention_dim - cfg.clip_width - cfg.openclip_width))
    t5 = clip.new_zeros(clip.shape[0], cfg.t5_tokens, cfg.joint_attention_dim)
    return torch.cat([clip, t5], dim=-2), torch.cat(pooled, dim=-1)


def save_folder(folder: Path, toks: tuple[Any, Any], encoders: Any, transformer: Any, vae: Any, sched: Any) -> Path:
    """Save the parts as a Stable Diffusion 3 pipeline folder (safetensors), T5 absent."""
    import diffusers

    pipe: Any = diffusers.StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=sched,
        vae=vae,
        text_encoder=encoders[0],
        tokenizer=toks[0],
        text_encoder_2=encoders[1],
        tokenizer_2=toks[1],
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.save_pretrained(folder)
    return folder
