"""Stable Diffusion XL (Podell et al. 2023) as an SDS prior: Stable Diffusion's backend with SDXL's text side.

What differs from SD 1.x / 2.x, as diffusers' `StableDiffusionXLPipeline` (`encode_prompt`,
`_get_add_time_ids`) does it:

- Two CLIP text encoders (ViT-L `text_encoder`, OpenCLIP bigG `text_encoder_2` with a projection);
  the UNet attends to their penultimate hidden states concatenated (768 + 1280 = 2048 channels).
- Added conditioning (`addition_embed_type: "text_time"`): the pooled, projected embedding of
  `text_encoder_2` (`text_embeds`) and six time ids, original size, crop top-left and target size
  (§2.2 of the paper): here (side, side), (0, 0), (side, side), `side` the guidance resolution.
- The empty negative prompt as zeros when the model says `force_zeros_for_empty_prompt` (SDXL
  base does): the pipeline's default, followed here for `guidance.negative_prompt = ""` (the
  pipeline zeroes only a missing negative prompt; sds's "" is that default). A non-empty
  negative prompt is encoded.
- The VAE in float32 when its config says `force_upcast` (SDXL's VAE overflows in float16), as the
  pipeline upcasts it; the UNet stays in `guidance.dtype`.

Each prompt's embedding is stored as one (L + 1, 2048) tensor, the hidden states and a last row
holding the pooled embedding (zero-padded), so the prompt machinery of Stable Diffusion (view
prompts, Perp-Neg, negative prompts for NFSD, the embedding cache) works on it unchanged;
`unet_inputs` splits it again for the UNet and VSD's LoRA copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sds_core.api import BuildContext, ConfigError
from sds_guidance._diffusers import cached_snapshot
from sds_guidance.config import StableDiffusionXLConfig
from sds_guidance.prompt_embeddings import PromptEmbeddings, model_key
from sds_guidance.stable_diffusion import StableDiffusionGuidance


def force_zeros_for_empty_prompt(model: str, revision: str | None) -> bool:
    """`force_zeros_for_empty_prompt` of the model's model_index.json (a folder, or a hub id in the
    local cache); True, SDXL base's value, when there is no such file or entry."""
    path = Path(model).expanduser()
    folder = path if path.is_dir() else cached_snapshot(model, revision)
    index = None if folder is None else folder / "model_index.json"
    if index is None or not index.is_file():
        return True
    try:
        value = json.loads(index.read_text(encoding="utf-8")).get("force_zeros_for_empty_prompt", True)
    except (OSError, ValueError, AttributeError):
        return True
    return bool(value)


def pack(hidden: Tensor, pooled: Tensor) -> Tensor:
    """(B, L, D) hidden states and (B, P) pooled embeddings, P <= D, as one (B, L + 1, D) tensor."""
    row = F.pad(pooled, (0, hidden.shape[-1] - pooled.shape[-1]))
    return torch.cat([hidden, row[:, None].to(hidden.dtype)], dim=1)


def unpack(states: Tensor, pooled_dim: int) -> tuple[Tensor, Tensor]:
    """The inverse of `pack`: (B, L, D) hidden states and (B, pooled_dim) pooled embeddings."""
    return states[:, :-1], states[:, -1, :pooled_dim]


def time_ids(resolution: int) -> Tensor:
    """SDXL's added time ids: original size, crop top-left, target size (`_get_add_time_ids`)."""
    return torch.tensor([resolution, resolution, 0, 0, resolution, resolution], dtype=torch.float32)


class StableDiffusionXLGuidance(StableDiffusionGuidance):
    """A frozen SDXL UNet + VAE; predicts eps for classifier-free guidance (`StableDiffusionGuidance`)."""

    what = "Stable Diffusion XL"
    config: StableDiffusionXLConfig

    def __init__(self, config: StableDiffusionXLConfig, context: BuildContext) -> None:
        super().__init__(config, context)
        self.time_ids = time_ids(self.resolution)

    def _vae_dtype(self) -> torch.dtype:
        """float32 for a float16 run when the VAE's config says `force_upcast`, as the pipeline does."""
        if self.dtype == torch.float16 and bool(getattr(self.vae.config, "force_upcast", False)):
            return torch.float32
        return self.dtype

    def _prompt_embeddings(self, context: BuildContext) -> PromptEmbeddings:
        """Both encoders' penultimate hidden states, concatenated, and text_encoder_2's pooled embedding."""
        config = self.config
        tokenizers = [self._tokenizer("tokenizer"), self._tokenizer("tokenizer_2")]
        encoders = [self._text_encoder("text_encoder"), self._text_encoder("text_encoder_2", projection=True)]
        lengths = [
            int(min(tok.model_max_length, enc.config.max_position_embeddings))
            for tok, enc in zip(tokenizers, encoders, strict=True)
        ]
        width = sum(int(enc.config.hidden_size) for enc in encoders)
        self.pooled_dim = int(encoders[1].config.projection_dim)
        expected = int(self.unet.config.cross_attention_dim)
        if width != expected or self.pooled_dim > width:
            raise ConfigError(
                f"{config.model} is not an SDXL model: its text encoders give {width} channels and its "
                f"UNet attends to {expected}"
            )
        zeros = config.force_zeros_for_empty_prompt
        if zeros is None:
            zeros = force_zeros_for_empty_prompt(config.model, config.revision)

        def encode(prompts: list[str]) -> Tensor:
            hidden, pooled = [], None
            for tokenizer, encoder, length in zip(tokenizers, encoders, lengths, strict=True):
                ids = tokenizer(
                    prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
                ).input_ids
                out = encoder(ids.to(self.device), output_hidden_states=True)
                hidden.append(out.hidden_states[-2])  # the penultimate layer (clip_skip unset)
                pooled = getattr(out, "text_embeds", None)  # text_encoder_2's projection, the last one
            assert pooled is not None
            packed = pack(torch.cat(hidden, dim=-1), pooled)
            if zeros:
                empty = torch.tensor([p == "" for p in prompts], device=packed.device)
                packed = torch.where(empty[:, None, None], torch.zeros_like(packed), packed)
            return packed

        key = model_key(config.model, "clip-xl", config.variant, config.revision, *lengths, int(zeros))
        return PromptEmbeddings(context.prompt, config, encode, key, self.device, self.dtype)

    def unet_inputs(self, states: Tensor) -> dict[str, Any]:
        """The hidden states as cross-attention context and `added_cond_kwargs` (pooled text, time ids)."""
        hidden, pooled = unpack(states, self.pooled_dim)
        ids = self.time_ids.to(states.device, states.dtype).expand(states.shape[0], -1)
        return {"encoder_hidden_states": hidden, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": ids}}
