"""The parts of a Stable Diffusion 1.x model, in SD's format, sized for the shapes world.

The fields that are not sizes are SD 1.5's as published (tests/fixtures/configs/sd15.json): the
UNet's block types (three cross-attention levels and a plain one), SiLU, 4 latent channels,
epsilon prediction; the KL autoencoder's four levels (a downscale of 8) and its block types; the
CLIP text transformer (quick GELU); the scheduler (PNDM config, scaled-linear betas 0.00085 to
0.012 over 1,000 steps). `save_folder` writes the layout that `StableDiffusionPipeline` and the
`stable-diffusion` backend read.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from sds_core.api import VIEWS
from sds_shapes.world import COLOURS, PRIMITIVES, SYNONYMS
from sds_shapes_learned.config import TrainConfig

# SD 1.5's scheduler_config.json
SCHEDULER: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "thresholding": False,
}


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word's pieces: the lowest-ranked adjacent pair merged until none is left."""
    while len(pieces) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(itertools.pairwise(pieces))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces = [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2 :]]
    return pieces


def _word_merges(words: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The tokens and BPE merges that spell each word as one token (the last piece ending in
    CLIP's "</w>"): for each word in turn, while the merges so far leave it in pieces, its first
    two pieces are merged by a new merge, ranked after all others, so the words already whole stay so."""
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        pieces = _bpe([*word[:-1], word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            ranks[(pieces[0], pieces[1])] = len(ranks)
            pieces = _bpe(pieces, ranks)
    merges = sorted(ranks, key=ranks.__getitem__)
    return [left + right for left, right in merges], merges


def tokenizer(pad_token: str = "<|endoftext|>") -> Any:
    """CLIP's byte-level BPE built offline: every byte as CLIP has it, the world's words one token
    each (so "a red cube, side view" is 7 tokens between the start and end tokens), the special
    tokens last as in CLIP's vocabulary; padded with the end token (SD; SD3's second tokenizer: "!")."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars])}
    words = ["a", "an", "the", "view", *COLOURS, *PRIMITIVES, *SYNONYMS, *VIEWS]
    tokens, merges = _word_merges([w for w in words if len(w) > 1])
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    # transformers 5 reads merges as (left, right) pairs at run time; its hints still say strings
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, pad_token=pad_token)  # type: ignore[arg-type]


def unet_config(cfg: TrainConfig) -> dict[str, Any]:
    """SD 1.5's UNet fields with its widths, depth and side narrowed to `cfg`."""
    levels = len(cfg.unet_channels)
    return {
        "act_fn": "silu",
        "attention_head_dim": cfg.attention_head_dim,
        "block_out_channels": list(cfg.unet_channels),
        "center_input_sample": False,
        "cross_attention_dim": cfg.clip_width,
        "down_block_types": ["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": cfg.layers_per_block,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05,
        "norm_num_groups": 8,
        "out_channels": 4,
        "sample_size": cfg.resolution // latent_downscale(cfg),
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1),
        "use_linear_projection": False,
    }


def vae_config(cfg: TrainConfig) -> dict[str, Any]:
    """SD 1.5's AutoencoderKL fields with its widths and depth narrowed; `scaling_factor` is set
    from the trained encoder's latents (LDM's 1 / std, which gave SD its 0.18215)."""
    levels = len(cfg.vae_channels)
    return {
        "act_fn": "silu",
        "block_out_channels": list(cfg.vae_channels),
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "out_channels": 3,
        "sample_size": cfg.resolution,
        "scaling_factor": 0.18215,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
    }


def latent_downscale(cfg: TrainConfig) -> int:
    """Pixels per latent along a side: 2 per VAE level after the first (SD: 8)."""
    return int(2 ** (len(cfg.vae_channels) - 1))


def clip_config(cfg: TrainConfig, vocab: int) -> dict[str, Any]:
    """SD 1.5's CLIP text encoder fields (ViT-L/14's text tower) with its sizes narrowed to `cfg`."""
    return {
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "quick_gelu",
        "hidden_size": cfg.clip_width,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": cfg.clip_width * 4,  # 3072 / 768
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "num_attention_heads": cfg.clip_heads,
        "num_hidden_layers": cfg.clip_layers,
        "pad_token_id": 1,
        "projection_dim": cfg.clip_width,
        "vocab_size": vocab,
    }


def build_vae(cfg: TrainConfig) -> Any:
    """The autoencoder with fresh weights from the current torch seed."""
    import diffusers

    return diffusers.AutoencoderKL.from_config(vae_config(cfg))


def build(cfg: TrainConfig) -> tuple[Any, Any, Any, Any]:
    """(tokenizer, text_encoder, unet, scheduler) with fresh weights from the current torch seed;
    the scheduler is the DDPM one of SD's betas (what training adds noise with)."""
    import diffusers
    import transformers

    tok = tokenizer()
    encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(**clip_config(cfg, len(tok))))
    unet = diffusers.UNet2DConditionModel.from_config(unet_config(cfg))
    scheduler = diffusers.DDPMScheduler.from_config(SCHEDULER)
    return tok, encoder, unet, scheduler


def save_folder(folder: Path, tok: Any, encoder: Any, unet: Any, vae: Any) -> Path:
    """Save the parts as a Stable Diffusion pipeline folder (safetensors), with SD's PNDM scheduler."""
    import diffusers

    pipe: Any = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=diffusers.PNDMScheduler.from_config(SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder
