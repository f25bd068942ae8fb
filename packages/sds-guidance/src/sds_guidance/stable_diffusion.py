"""Stable Diffusion 1.x / 2.x as an SDS prior (latent diffusion; the open substitute for Imagen).

RGB renders are resized to `resolution` (by default the model's own: the UNet's sample_size
times the VAE's downscale) and VAE-encoded with gradient; latent renders are used
as they are. eps- and v-prediction checkpoints both give eps for SDS. The UNet and the VAE encoder
are compiled on CUDA (`guidance.compile`); the UNet runs in `guidance.dtype` (float16 on CUDA) and
its prediction, the latents and so the SDS gradient are float32. The prompt embeddings are
computed at build time (and cached on disk); the text encoder is released at the first
prediction (until then a loss may add a text, e.g. NFSD's negative prompt).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sds_core.api import BuildContext, CameraBatch, ConfigError, NoisePrediction, Render
from sds_guidance._diffusers import (
    compile_for,
    compile_wanted,
    conditioning_batch,
    declare_background,
    encode_render,
    epsilon_from_output,
    freeze,
    hub_kwargs,
    load_part,
    load_scheduler_and_unet,
    load_tokenizer,
    module_device,
    place,
    resolve_dtype,
    split_predictions,
    use_safetensors,
)
from sds_guidance.config import StableDiffusionConfig
from sds_guidance.prompt_embeddings import PromptEmbeddings, TextConditioning, model_key


class StableDiffusionGuidance:
    """A frozen Stable Diffusion UNet + VAE; predicts eps for classifier-free guidance."""

    space = "latent"
    what = "Stable Diffusion"  # the kind of folder a failed load names

    def __init__(self, config: StableDiffusionConfig, context: BuildContext) -> None:
        from diffusers import AutoencoderKL

        self.config = config
        self.device = torch.device(context.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        compiling = compile_wanted(config, self.device)
        model, extra = config.model, hub_kwargs(config.variant, config.revision)
        what = self.what
        declare_background(self, config)

        self.scheduler, self.unet = self._scheduler_and_unet()
        safe = use_safetensors(config.allow_pickled_weights)  # True: pickled `.bin` weights refused
        self.vae = load_part(
            config,
            what,
            "vae",
            lambda: AutoencoderKL.from_pretrained(
                model, subfolder="vae", torch_dtype=self.dtype, use_safetensors=safe, **extra
            ),
        )
        freeze(self.vae)
        self.vae_dtype = self._vae_dtype()

        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = config.resolution or int(self.unet.config.sample_size) * self.vae_scale
        if self.resolution % self.vae_scale:
            raise ConfigError(f"guidance.resolution must be a multiple of {self.vae_scale}, not {self.resolution}")
        self.channels = int(self.unet.config.in_channels)
        self.latent_resolution = self.resolution // self.vae_scale
        self.default_guidance_scale = config.guidance_scale
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self.prediction_type = str(self.scheduler.config.prediction_type)
        self._alphas = self.scheduler.alphas_cumprod.to(torch.float32)
        self.scaling_factor = float(getattr(self.vae.config, "scaling_factor", 0.18215))

        self.embeddings = self._prompt_embeddings(context)
        # the text encoder is referenced only by `encode`, which the embeddings drop at the first prediction
        place([self.unet, self.vae], self.device, self.dtype, config.cpu_offload)
        if self.vae_dtype != self.dtype:
            self.vae.to(dtype=self.vae_dtype)
        self._unet = compile_for(self.unet, config, compiling)
        self._moments = compile_for(self._encoder_moments, config, compiling)

    def _scheduler_and_unet(self) -> tuple[Any, Any]:
        """The DDPM scheduler and the frozen UNet (overridden by MVDream: its multi-view UNet)."""
        return load_scheduler_and_unet(self.config.model, self.what, self.config, self.device, self.dtype)

    # --- loading the text side (overridden by SDXL: two encoders) ----------------------------

    def _tokenizer(self, part: str) -> Any:
        """The tokenizer in subfolder `part` (`load_tokenizer`)."""
        return load_tokenizer(self.config, self.what, part)

    def _text_encoder(self, part: str, projection: bool = False) -> Any:
        """The frozen CLIP text encoder in subfolder `part` (`projection`: CLIPTextModelWithProjection,
        SDXL's text_encoder_2), on the device. Each class is named at its call, for the static check
        of tests/guidance/test_model_folder_safety.py."""
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        config = self.config
        safe, extra = use_safetensors(config.allow_pickled_weights), hub_kwargs(config.variant, config.revision)
        options: dict[str, Any] = {"subfolder": part, "torch_dtype": self.dtype, **extra}

        def load() -> Any:
            if projection:
                return CLIPTextModelWithProjection.from_pretrained(
                    config.model, use_safetensors=safe, trust_remote_code=False, **options
                )
            return CLIPTextModel.from_pretrained(config.model, use_safetensors=safe, trust_remote_code=False, **options)

        encoder = load_part(config, self.what, part, load)
        freeze(encoder)
        return encoder.to(self.device)

    def _prompt_embeddings(self, context: BuildContext) -> PromptEmbeddings:
        """CLIP's last hidden states of every prompt the run needs (SD 1.x / 2.x)."""
        config = self.config
        tokenizer = self._tokenizer("tokenizer")
        text_encoder = self._text_encoder("text_encoder")
        max_length = int(min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings))

        def encode(prompts: list[str]) -> Tensor:
            ids = tokenizer(
                prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
            ).input_ids
            return text_encoder(ids.to(self.device))[0]  # type: ignore[no-any-return]

        key = model_key(config.model, "clip", config.variant, config.revision, max_length)
        return PromptEmbeddings(context.prompt, config, encode, key, self.device, self.dtype)

    def _vae_dtype(self) -> torch.dtype:
        """The dtype the VAE runs in: the UNet's (SDXL's overrides it with `force_upcast`)."""
        return self.dtype

    def unet_inputs(self, states: Tensor) -> dict[str, Any]:
        """The UNet's conditioning arguments for the stacked text embeddings `states` (B, L, D); the
        LoRA copy of VSD (`sds_guidance.lora`) calls it too."""
        return {"encoder_hidden_states": states}

    # --- the Guidance protocol --------------------------------------------------------------

    def alphas_cumprod(self) -> Tensor:
        return self._alphas

    def prepare(self, render: Render) -> Tensor:
        """Latents of the render: RGB in [0, 1] resized and VAE-encoded (with gradient), or latents as they are."""
        device = module_device(self.vae, self.device)
        args = (self.channels, self.resolution, self._moments, device, self.vae_dtype, self.config.encode)
        latents, given = encode_render(render, *args)
        return latents if given else (latents * self.scaling_factor).float()

    def _encoder_moments(self, x: Tensor) -> Tensor:
        """The VAE posterior's mean and log-variance (what `torch.compile` sees: tensors in, a tensor
        out; the posterior is drawn from eagerly, with the process's random state)."""
        return self.vae.encode(x).latent_dist.parameters  # type: ignore[no-any-return]

    def decode(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            z = (x / self.scaling_factor).to(module_device(self.vae, self.device), self.vae_dtype)
            image = self.vae.decode(z).sample
        return ((image.float() + 1) / 2).clamp(0, 1)

    def condition(self, render: Render, cameras: CameraBatch | None) -> TextConditioning:
        views = cameras.views if cameras is not None else None
        return self.embeddings.condition(render.image.shape[0], views)

    def trainable_copy(self, rank: int, camera_dim: int) -> Any:
        """VSD's eps_phi: a LoRA copy of the UNet with a camera embedding (TrainableCopy)."""
        from sds_guidance.lora import LoraEpsilon

        return LoraEpsilon(self, rank, camera_dim)

    def negative_condition(self, conditioning: TextConditioning | None, text: str) -> TextConditioning | None:
        """Predictions under a free text (NegativePrompting, for NFSD): texts are added before the first prediction."""
        return self.embeddings.negative_condition(conditioning, text)

    def predict_noise(self, x_t: Tensor, t: Tensor, conditioning: Any) -> NoisePrediction:
        cond: TextConditioning = conditioning
        self.embeddings.release()  # the text encoder goes with the last reference to it
        batch = x_t.shape[0]
        copies = 2 + (0 if cond.negative is None else cond.negative.shape[0])
        device = module_device(self.unet, self.device)
        x_in = x_t.to(device, torch.float32).repeat(copies, 1, 1, 1)
        model_in = x_in.to(self.dtype)
        t_in = t.to(device).repeat(copies)
        states = conditioning_batch(cond.cond, cond.uncond, cond.negative).to(device, self.dtype)
        output = self._unet(model_in, t_in, **self.unet_inputs(states)).sample.float()
        alphas = self._alphas.to(device)[t_in]
        eps = epsilon_from_output(output, x_in, alphas, self.prediction_type)
        eps_c, eps_u, eps_n = split_predictions(eps.to(x_t.device), batch, cond.negative is not None)
        return NoisePrediction(cond=eps_c, uncond=eps_u, negative=eps_n, negative_weights=cond.negative_weights)
