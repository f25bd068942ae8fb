"""FLUX.1 (Black Forest Labs, 2024) as an SDS prior: a rectified-flow MMDiT with single-stream blocks.

As diffusers' `FluxPipeline`:

- Latents of the 16-channel `AutoencoderKL` ((z - shift_factor) * scaling_factor) are packed 2 x 2
  into tokens of 64 channels (`FluxPipeline._pack_latents`), with the latent image ids of their
  positions for the rotary embedding (`_prepare_latent_image_ids`) and zero text ids; the
  transformer's output is unpacked again (`_unpack_latents`).
- Text: CLIP L's pooled output (`pooled_projections`) and T5-XXL's last hidden states
  (`max_sequence_length` 512).
- The schedule's time shift depends on the resolution: mu = `calculate_shift` of the latent's
  token count (256 .. 4096 tokens -> 0.5 .. 1.15), applied by the scheduler's `time_shift`
  (`sds_guidance._flow.flow_sigmas`). The transformer's timestep is sigma (the pipeline's t / 1000).
- FLUX.1-dev is guidance-distilled: the guidance scale is an input (`guidance_embeds`; 3.5 by
  default, `distilled_guidance_scale`) and there is no unconditional pass, so `guidance.cfg_mode =
  distilled` costs one transformer call per prediction, and both branches of the prediction are
  that one guided velocity (the losses that need two branches, `csd`, `nfsd`, `ism`, refuse it).
  `guidance.cfg_mode = true-cfg` runs the negative prompt as well (FluxPipeline's true CFG, the guidance
  embedding still given): both branches in one call at twice the batch (the pipeline makes two
  calls), v_0 + (1 + omega)(v_y - v_0).

Each prompt's embedding is stored as one (L + 1, 4096) tensor, T5's states and a last row holding
CLIP's pooled embedding (zero-padded: `stable_diffusion_xl.pack`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sds_core.api import BuildContext, ConfigError
from sds_guidance._diffusers import hub_kwargs, load_part, use_safetensors
from sds_guidance._flow import FlowMatchingGuidance
from sds_guidance.config import FluxConfig
from sds_guidance.prompt_embeddings import PromptEmbeddings, TextConditioning, model_key
from sds_guidance.stable_diffusion_xl import pack, unpack

#: FluxPipeline's default_sample_size (128 latents: 1024 pixels); the transformer has no sample_size
DEFAULT_SAMPLE_SIZE = 128


class FluxGuidance(FlowMatchingGuidance):
    """A frozen FLUX.1 transformer + VAE; predicts velocities, guidance-distilled or with true CFG."""

    what = "FLUX.1"
    config: FluxConfig
    patch = 2  # the 2 x 2 packing of latents into tokens

    def __init__(self, config: FluxConfig, context: BuildContext) -> None:
        super().__init__(config, context)
        embeds = bool(self.transformer.config.guidance_embeds)
        self.distilled_guidance = config.cfg_mode == "distilled"
        if self.distilled_guidance and not embeds:
            raise ConfigError(
                f"{config.model} has no guidance embedding (guidance_embeds false, as FLUX.1-schnell); "
                "set guidance.cfg_mode=true-cfg"
            )
        if self.distilled_guidance and config.perp_neg:
            raise ConfigError(
                "guidance.perp_neg needs guidance.cfg_mode=true-cfg (the distilled FLUX makes no other branch)"
            )
        self._guidance = torch.tensor([config.distilled_guidance_scale]) if embeds else None
        side = self.latent_resolution // 2
        from diffusers import FluxPipeline

        self._pipeline = FluxPipeline  # its static helpers: _pack_latents, _unpack_latents, _prepare_latent_image_ids
        self._image_ids = FluxPipeline._prepare_latent_image_ids(1, side, side, self.device, self.dtype)

    def _load_transformer(self) -> Any:
        from diffusers import FluxTransformer2DModel

        config = self.config
        safe, extra = use_safetensors(config.allow_pickled_weights), hub_kwargs(config.variant, config.revision)
        return load_part(
            config,
            self.what,
            "transformer",
            lambda: FluxTransformer2DModel.from_pretrained(
                config.model, subfolder="transformer", torch_dtype=self.dtype, use_safetensors=safe, **extra
            ),
        )

    def _default_resolution(self) -> int:
        return DEFAULT_SAMPLE_SIZE * self.vae_scale

    def _prompt_embeddings(self, context: BuildContext) -> PromptEmbeddings:
        """T5's states and CLIP L's pooled output (FluxPipeline.encode_prompt)."""
        config = self.config
        clip_tokenizer, clip = self._tokenizer("tokenizer"), self._text_encoder("text_encoder", "clip")
        t5 = (self._tokenizer("tokenizer_2"), self._text_encoder("text_encoder_2", "t5"))
        self.pooled_dim = int(clip.config.hidden_size)
        joint = int(self.transformer.config.joint_attention_dim)
        if self.pooled_dim != int(self.transformer.config.pooled_projection_dim) or self.pooled_dim > joint:
            raise ConfigError(
                f"{config.model} is not a FLUX.1 model: its CLIP encoder gives {self.pooled_dim} pooled channels "
                f"and its transformer takes {self.transformer.config.pooled_projection_dim}"
            )
        length = int(clip_tokenizer.model_max_length)

        def encode(prompts: list[str]) -> Tensor:
            ids = clip_tokenizer(
                prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
            ).input_ids
            pooled = clip(ids.to(self.device), output_hidden_states=False).pooler_output
            return pack(self._t5_states(*t5, prompts), pooled)

        key = model_key(config.model, "flux", config.variant, config.revision, config.max_sequence_length)
        return PromptEmbeddings(context.prompt, config, encode, key, self.device, self.dtype)

    def _branches(self, cond: TextConditioning) -> Tensor:
        """Distilled: the prompt's branch alone (one transformer call); else [cond; uncond; negatives]."""
        return cond.cond if self.distilled_guidance else super()._branches(cond)

    def _velocity(self, x: Tensor, sigma: Tensor, states: Tensor) -> Tensor:
        """FLUX's transformer on the packed latents at timestep sigma (the pipeline's t / 1000)."""
        batch, channels, height, width = x.shape
        hidden, pooled = unpack(states, self.pooled_dim)
        packed = self._pipeline._pack_latents(x, batch, channels, height, width)
        guidance = None if self._guidance is None else self._guidance.to(x.device).expand(batch)
        text_ids = torch.zeros(hidden.shape[1], 3, device=x.device, dtype=x.dtype)
        out = self._transformer(
            hidden_states=packed,
            timestep=sigma.to(x.dtype),
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=hidden,
            txt_ids=text_ids,
            img_ids=self._image_ids.to(x.device, x.dtype),
            return_dict=False,
        )[0]
        return self._pipeline._unpack_latents(out, height * self.vae_scale, width * self.vae_scale, self.vae_scale)  # type: ignore[no-any-return]
