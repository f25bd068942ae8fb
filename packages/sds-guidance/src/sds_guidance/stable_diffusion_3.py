"""Stable Diffusion 3 / 3.5 (Esser et al., "Scaling Rectified Flow Transformers", ICML 2024) as an SDS prior.

An MMDiT (`SD3Transformer2DModel`) on 16-channel latents of `AutoencoderKL` (scaling and shift
factors), trained by rectified flow: the flow-matching schedule of `sds_guidance._flow` with the
scheduler's shift (3.0 for SD3 medium). As diffusers' `StableDiffusion3Pipeline.encode_prompt`:

- CLIP L and CLIP G (both `CLIPTextModelWithProjection`): their penultimate hidden states
  concatenated (768 + 1280) and zero-padded to T5's width (4096), then T5-XXL's last hidden states
  (`max_sequence_length` 256) appended along the tokens; the pooled embedding is the two
  projections concatenated (2048), `pooled_projections`.
- `drop_t5`: T5's tokens as zeros of the transformer's `joint_attention_dim`, as the pipeline makes
  them when `text_encoder_3` is None (T5 is then never loaded).
- The negative prompt ("" by default) is encoded, not zeroed; classifier-free guidance is
  v_0 + (1 + omega)(v_y - v_0), the pipeline's with guidance_scale = 1 + omega.
- The transformer's timestep is sigma x 1000 (the scheduler's `timesteps`).

Each prompt's embedding is stored as one (L + 1, 4096) tensor, the hidden states and a last row
holding the pooled embedding (zero-padded: `stable_diffusion_xl.pack`), so the prompt machinery
(view prompts, Perp-Neg, negative prompts for NFSD, the embedding cache) works on it unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sds_core.api import BuildContext, ConfigError
from sds_guidance._diffusers import hub_kwargs, load_part, use_safetensors
from sds_guidance._flow import FlowMatchingGuidance
from sds_guidance.config import StableDiffusion3Config
from sds_guidance.prompt_embeddings import PromptEmbeddings, model_key
from sds_guidance.stable_diffusion_xl import pack, unpack


class StableDiffusion3Guidance(FlowMatchingGuidance):
    """A frozen SD3 transformer + VAE; predicts velocities for classifier-free guidance."""

    what = "Stable Diffusion 3"
    config: StableDiffusion3Config

    def __init__(self, config: StableDiffusion3Config, context: BuildContext) -> None:
        super().__init__(config, context)

    def _load_transformer(self) -> Any:
        from diffusers import SD3Transformer2DModel

        config = self.config
        safe, extra = use_safetensors(config.allow_pickled_weights), hub_kwargs(config.variant, config.revision)
        transformer = load_part(
            config,
            self.what,
            "transformer",
            lambda: SD3Transformer2DModel.from_pretrained(
                config.model, subfolder="transformer", torch_dtype=self.dtype, use_safetensors=safe, **extra
            ),
        )
        self.patch = int(transformer.config.patch_size)
        return transformer

    def _prompt_embeddings(self, context: BuildContext) -> PromptEmbeddings:
        """[CLIP L | CLIP G penultimate states, padded to T5's width ; T5 states], pooled L | G."""
        config = self.config
        tokenizers = [self._tokenizer("tokenizer"), self._tokenizer("tokenizer_2")]
        encoders = [self._text_encoder("text_encoder", "clip-projection")]
        encoders.append(self._text_encoder("text_encoder_2", "clip-projection"))
        joint = int(self.transformer.config.joint_attention_dim)
        pooled_dim = sum(int(enc.config.projection_dim) for enc in encoders)
        clip_width = sum(int(enc.config.hidden_size) for enc in encoders)
        if pooled_dim != int(self.transformer.config.pooled_projection_dim) or clip_width > joint:
            raise ConfigError(
                f"{config.model} is not an SD3 model: its CLIP encoders give {pooled_dim} pooled channels and "
                f"its transformer takes {self.transformer.config.pooled_projection_dim}"
            )
        self.pooled_dim = pooled_dim
        t5 = None if config.drop_t5 else (self._tokenizer("tokenizer_3"), self._text_encoder("text_encoder_3", "t5"))
        length = int(tokenizers[0].model_max_length)

        def encode(prompts: list[str]) -> Tensor:
            hidden, pooled = [], []
            for tokenizer, encoder in zip(tokenizers, encoders, strict=True):
                ids = tokenizer(
                    prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
                ).input_ids
                out = encoder(ids.to(self.device), output_hidden_states=True)
                pooled.append(out[0])  # text_embeds: the projected pooled output
                hidden.append(out.hidden_states[-2])  # the penultimate layer (clip_skip unset)
            clip = torch.cat(hidden, dim=-1)
            if t5 is None:  # StableDiffusion3Pipeline._get_t5_prompt_embeds with text_encoder_3 None
                t5_states = torch.zeros(len(prompts), config.max_sequence_length, joint, device=clip.device)
            else:
                t5_states = self._t5_states(*t5, prompts)
            clip = F.pad(clip, (0, t5_states.shape[-1] - clip.shape[-1]))
            states = torch.cat([clip, t5_states.to(clip.dtype)], dim=-2)
            return pack(states, torch.cat(pooled, dim=-1))

        key = model_key(
            config.model, "sd3", config.variant, config.revision, config.max_sequence_length, config.drop_t5
        )
        return PromptEmbeddings(context.prompt, config, encode, key, self.device, self.dtype)

    def _velocity(self, x: Tensor, sigma: Tensor, states: Tensor) -> Tensor:
        """SD3's transformer at timestep sigma x T (the scheduler's timesteps), as the pipeline calls it."""
        hidden, pooled = unpack(states, self.pooled_dim)
        timestep = sigma * self.num_train_timesteps  # float32, as the pipeline's scheduler timesteps
        return self._transformer(  # type: ignore[no-any-return]
            hidden_states=x, timestep=timestep, encoder_hidden_states=hidden, pooled_projections=pooled
        ).sample
