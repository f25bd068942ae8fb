"""What the rectified-flow transformer backends (SD3, FLUX) share: the flow-matching schedule, the
16-channel VAE with its scaling and shift factors, loading and the Guidance protocol.

A flow model noises x_t = (1 - s) x + s eps and predicts the velocity v = eps - x (SD3, Esser et
al. 2024, §2; FLUX.1 the same). The guidance's `noise_schedule()` is a `sds_core.api.FlowSchedule`
over the scheduler's training sigmas with its time shift: FlowMatchEulerDiscreteScheduler's
s = shift s' / (1 + (shift - 1) s') for s' = (t + 1) / T (SD3, shift 3.0), or, when the scheduler
shifts dynamically (FLUX), its `time_shift(mu, 1, s')` with mu from the latent's token count by the
pipelines' `calculate_shift`. `predict_noise` returns velocities (cond, uncond and Perp-Neg
negatives in one batch, as Stable Diffusion's backend does); the losses read them through the
schedule (`sds` is RFDS there). Subclasses give the text side (`_prompt_embeddings`), the
transformer (`_load_transformer`) and its call (`_velocity`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sds_core.api import BuildContext, CameraBatch, ConfigError, FlowSchedule, NoisePrediction, Render
from sds_guidance._diffusers import (
    compile_for,
    compile_wanted,
    conditioning_batch,
    declare_background,
    encode_render,
    freeze,
    hub_kwargs,
    load_part,
    load_tokenizer,
    module_device,
    place,
    resolve_dtype,
    split_predictions,
    use_safetensors,
)
from sds_guidance.config import FlowModelOptions
from sds_guidance.prompt_embeddings import PromptEmbeddings, TextConditioning


def flow_dtype(name: str, device: torch.device) -> torch.dtype:
    """ "auto": bfloat16 on CUDA (as the SD3 and FLUX model cards load them), float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return resolve_dtype(name, device)


def flow_sigmas(scheduler: Any, image_seq_len: int) -> Tensor:
    """The scheduler's training sigmas for t = 0 .. T - 1 (noise growing), time-shifted as its
    pipeline shifts them: at init by `shift` (SD3), or by `time_shift(mu, 1, s)` with the pipeline's
    `calculate_shift(image_seq_len, ...)` when `use_dynamic_shifting` (FLUX)."""
    config = scheduler.config
    if not config.get("use_dynamic_shifting", False):
        # FlowMatchEulerDiscreteScheduler.__init__: s = (T .. 1) / T, shifted; flipped to t = 0 .. T - 1
        return scheduler.sigmas.flip(0).to(torch.float32)  # type: ignore[no-any-return]
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    mu = calculate_shift(
        image_seq_len,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )
    steps = int(config.num_train_timesteps)
    base = torch.arange(1, steps + 1, dtype=torch.float32) / steps
    return scheduler.time_shift(mu, 1.0, base).to(torch.float32)  # type: ignore[no-any-return]


class FlowMatchingGuidance:
    """A frozen rectified-flow transformer and its VAE; predicts velocities for classifier-free guidance."""

    space = "latent"
    what = "flow-matching"  # the kind of folder a failed load names
    #: the patch side the latent must divide into (SD3: the transformer's patch_size; FLUX: 2 x 2 packing)
    patch = 2
    #: True when `predict_noise` returns the guidance-distilled prediction in both branches (FLUX.1-dev)
    distilled_guidance = False

    def __init__(self, config: FlowModelOptions, context: BuildContext) -> None:
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

        self.config = config
        self.device = torch.device(context.device)
        self.dtype = flow_dtype(config.dtype, self.device)
        compiling = compile_wanted(config, self.device)
        model, extra = config.model, hub_kwargs(config.variant, config.revision)
        declare_background(self, config)
        self.scheduler = load_part(  # a scheduler has no weights (a JSON config)
            config,
            self.what,
            "scheduler",
            lambda: FlowMatchEulerDiscreteScheduler.from_pretrained(
                model, subfolder="scheduler", revision=config.revision
            ),
        )
        self.transformer = self._load_transformer()
        freeze(self.transformer)
        safe = use_safetensors(config.allow_pickled_weights)
        self.vae = load_part(
            config,
            self.what,
            "vae",
            lambda: AutoencoderKL.from_pretrained(
                model, subfolder="vae", torch_dtype=self.dtype, use_safetensors=safe, **extra
            ),
        )
        freeze(self.vae)
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = int(config.resolution or self._default_resolution())
        step = self.vae_scale * self.patch
        if self.resolution % step:
            raise ConfigError(f"guidance.resolution must be a multiple of {step}, not {self.resolution}")
        self.channels = int(self.vae.config.latent_channels)
        self.latent_resolution = self.resolution // self.vae_scale
        self.default_guidance_scale = config.guidance_scale
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        # the pipelines decode z / scaling_factor + shift_factor, and encode (z - shift) * scaling
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.shift_factor = float(getattr(self.vae.config, "shift_factor", None) or 0.0)
        tokens = (self.latent_resolution // self.patch) ** 2
        self._schedule = FlowSchedule(flow_sigmas(self.scheduler, tokens))
        self.vae_dtype = self._vae_dtype()

        self.embeddings = self._prompt_embeddings(context)
        place([self.transformer, self.vae], self.device, self.dtype, config.cpu_offload)
        if self.vae_dtype != self.dtype:
            self.vae.to(dtype=self.vae_dtype)
        self._transformer = compile_for(self.transformer, config, compiling)
        self._moments = compile_for(self._encoder_moments, config, compiling)

    # --- what a backend gives -----------------------------------------------------------------

    def _load_transformer(self) -> Any:
        raise NotImplementedError

    def _default_resolution(self) -> int:
        return int(self.transformer.config.sample_size) * self.vae_scale

    def _prompt_embeddings(self, context: BuildContext) -> PromptEmbeddings:
        raise NotImplementedError

    def _velocity(self, x: Tensor, sigma: Tensor, states: Tensor) -> Tensor:
        """The transformer's velocity for latents x (N, C, h, w) at sigmas (N,) under text `states`."""
        raise NotImplementedError

    # --- loading helpers ------------------------------------------------------------------------

    def _vae_dtype(self) -> torch.dtype:
        """float32 for a float16 run when the VAE's config says `force_upcast`, as the pipelines do."""
        if self.dtype == torch.float16 and bool(getattr(self.vae.config, "force_upcast", False)):
            return torch.float32
        return self.dtype

    def _tokenizer(self, part: str) -> Any:
        """The tokenizer in subfolder `part` (`load_tokenizer`)."""
        return load_tokenizer(self.config, self.what, part)

    def _text_encoder(self, part: str, kind: str) -> Any:
        """The frozen text encoder in subfolder `part`: "clip" (CLIPTextModel), "clip-projection"
        (CLIPTextModelWithProjection) or "t5" (T5EncoderModel), on the device."""
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

        config = self.config
        safe, extra = use_safetensors(config.allow_pickled_weights), hub_kwargs(config.variant, config.revision)
        options: dict[str, Any] = {"subfolder": part, "torch_dtype": self.dtype, **extra}

        def load() -> Any:
            if kind == "t5":
                return T5EncoderModel.from_pretrained(
                    config.model, use_safetensors=safe, trust_remote_code=False, **options
                )
            if kind == "clip-projection":
                return CLIPTextModelWithProjection.from_pretrained(
                    config.model, use_safetensors=safe, trust_remote_code=False, **options
                )
            return CLIPTextModel.from_pretrained(config.model, use_safetensors=safe, trust_remote_code=False, **options)

        encoder = load_part(config, self.what, part, load)
        freeze(encoder)
        return encoder.to(self.device)

    def _t5_states(self, tokenizer: Any, encoder: Any, prompts: list[str]) -> Tensor:
        """T5's last hidden states of `prompts`, `max_sequence_length` tokens (`_get_t5_prompt_embeds`)."""
        ids = tokenizer(
            prompts,
            padding="max_length",
            max_length=self.config.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        ).input_ids
        return encoder(ids.to(self.device))[0]  # type: ignore[no-any-return]

    # --- the Guidance protocol ------------------------------------------------------------------

    def noise_schedule(self) -> FlowSchedule:
        """The flow-matching schedule (OwnsSchedule): x_t = (1 - s_t) x + s_t eps, velocity predictions."""
        return self._schedule

    def prepare(self, render: Render) -> Tensor:
        """Latents of the render: RGB in [0, 1] resized and VAE-encoded (with gradient), shifted and
        scaled as the pipelines do ((z - shift_factor) * scaling_factor); latents as they are."""
        device = module_device(self.vae, self.device)
        args = (self.channels, self.resolution, self._moments, device, self.vae_dtype, self.config.encode)
        latents, given = encode_render(render, *args)
        return latents if given else ((latents - self.shift_factor) * self.scaling_factor).float()

    def _encoder_moments(self, x: Tensor) -> Tensor:
        """The VAE posterior's mean and log-variance (tensors in, a tensor out, for torch.compile)."""
        return self.vae.encode(x).latent_dist.parameters  # type: ignore[no-any-return]

    def decode(self, x: Tensor) -> Tensor:
        """Latents to RGB in [0, 1]: z / scaling_factor + shift_factor through the VAE decoder."""
        with torch.no_grad():
            z = (x / self.scaling_factor + self.shift_factor).to(module_device(self.vae, self.device), self.vae_dtype)
            image = self.vae.decode(z).sample
        return ((image.float() + 1) / 2).clamp(0, 1)

    def condition(self, render: Render, cameras: CameraBatch | None) -> TextConditioning:
        views = cameras.views if cameras is not None else None
        return self.embeddings.condition(render.image.shape[0], views)

    def negative_condition(self, conditioning: TextConditioning | None, text: str) -> TextConditioning | None:
        """Predictions under a free text (NegativePrompting, for NFSD): texts are added before the first prediction."""
        return self.embeddings.negative_condition(conditioning, text)

    def _branches(self, cond: TextConditioning) -> Tensor:
        """The text states of every branch, stacked on the batch axis: [cond; uncond; negatives]."""
        return conditioning_batch(cond.cond, cond.uncond, cond.negative)

    def predict_noise(self, x_t: Tensor, t: Tensor, conditioning: Any) -> NoisePrediction:
        """Velocities v(x_t; y, t) and v(x_t; negative prompt, t) (and Perp-Neg negatives) in one batch."""
        cond: TextConditioning = conditioning
        self.embeddings.release()  # the text encoders go with the last reference to them
        batch = x_t.shape[0]
        device = module_device(self.transformer, self.device)
        states = self._branches(cond).to(device, self.dtype)
        copies = states.shape[0] // batch
        x_in = x_t.to(device, torch.float32).repeat(copies, 1, 1, 1)
        sigma = self._schedule.sigmas.to(device)[t.to(device)].repeat(copies)
        velocity = self._velocity(x_in.to(self.dtype), sigma, states).float().to(x_t.device)
        if copies == 1:  # guidance-distilled: the one prediction is the guided one
            return NoisePrediction(cond=velocity, uncond=velocity)
        v_c, v_u, v_n = split_predictions(velocity, batch, cond.negative is not None)
        return NoisePrediction(cond=v_c, uncond=v_u, negative=v_n, negative_weights=cond.negative_weights)
