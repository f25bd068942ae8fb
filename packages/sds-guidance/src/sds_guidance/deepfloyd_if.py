"""DeepFloyd IF stage I as an SDS prior: 64 x 64 pixels, a T5 text encoder, learned variance.

The UNet outputs eps and a variance interpolation (6 channels for RGB); SDS keeps the eps half.
The T5 encoder (about 4.8B parameters for IF-I-XL) is released as soon as the prompt embeddings
exist; they are cached on disk, so a second run with the same prompt never loads it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sds_core.api import BuildContext, CameraBatch, ConfigError, NoisePrediction, Render
from sds_guidance._diffusers import (
    compile_for,
    compile_wanted,
    conditioning_batch,
    declare_background,
    epsilon_from_output,
    freeze,
    hub_kwargs,
    load_part,
    load_scheduler_and_unet,
    module_device,
    place,
    resolve_dtype,
    split_predictions,
    use_safetensors,
)
from sds_guidance.config import DeepFloydIFConfig
from sds_guidance.prompt_embeddings import PromptEmbeddings, TextConditioning, model_key


class DeepFloydIFGuidance:
    """A frozen IF stage-I UNet on pixels in [-1, 1]."""

    space = "rgb"

    def __init__(self, config: DeepFloydIFConfig, context: BuildContext) -> None:
        self.config = config
        self.device = torch.device(context.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        compiling = compile_wanted(config, self.device)
        model, extra = config.model, hub_kwargs(config.variant, config.revision)
        what = "DeepFloyd IF stage I"
        self.scheduler, self.unet = load_scheduler_and_unet(model, what, config, self.device, self.dtype)
        self.channels = 3
        declare_background(self, config)
        if int(self.unet.config.in_channels) != self.channels:
            raise ConfigError(
                f"{model} is not an IF stage-I model: its UNet takes {self.unet.config.in_channels} channels"
            )
        self.resolution = config.resolution or int(self.unet.config.sample_size)
        self.latent_resolution = self.resolution
        self.default_guidance_scale = config.guidance_scale
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self.prediction_type = str(self.scheduler.config.prediction_type)
        self._alphas = self.scheduler.alphas_cumprod.to(torch.float32)

        key = model_key(model, "t5", config.variant, config.revision, config.max_length)
        encode = self._encoder(model, extra)
        self.embeddings = PromptEmbeddings(context.prompt, config, encode, key, self.device, self.dtype)
        place([self.unet], self.device, self.dtype, config.cpu_offload)
        self._unet = compile_for(self.unet, config, compiling)  # compiled on CUDA (guidance.compile)

    def _encoder(self, model: str, extra: dict[str, Any]) -> Any:
        """A function encoding prompts with T5, loading the encoder only when a prompt is not cached."""
        from transformers import AutoTokenizer, T5EncoderModel

        config, device, dtype = self.config, self.device, self.dtype
        safe = use_safetensors(config.allow_pickled_weights)  # True: pickled `.bin` weights refused

        def encode(prompts: list[str]) -> Tensor:
            what = "DeepFloyd IF stage I"
            tokenizer = load_part(  # a tokenizer has no weights; trust_remote_code=False refuses a folder's code
                config,
                what,
                "tokenizer",
                lambda: AutoTokenizer.from_pretrained(
                    model, subfolder="tokenizer", revision=config.revision, trust_remote_code=False
                ),
            )
            encoder = load_part(
                config,
                what,
                "text_encoder",
                lambda: T5EncoderModel.from_pretrained(
                    model,
                    subfolder="text_encoder",
                    torch_dtype=dtype,
                    use_safetensors=safe,
                    trust_remote_code=False,
                    **extra,
                ),
            )
            freeze(encoder)
            encoder.to(device)  # type: ignore[arg-type]
            tokens = tokenizer(
                prompts,
                padding="max_length",
                max_length=config.max_length,
                truncation=True,
                add_special_tokens=True,
                return_tensors="pt",
            )
            with torch.no_grad():
                out = encoder(tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device))[0]
            del encoder  # released: IF-I-XL's T5 alone takes about 10 GB in half precision
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return out

        return encode

    # --- the Guidance protocol --------------------------------------------------------------

    def alphas_cumprod(self) -> Tensor:
        return self._alphas

    def prepare(self, render: Render) -> Tensor:
        """Pixels in [-1, 1] at the model's side (64 for stage I; resized with antialiasing), differentiably."""
        if render.space != "rgb":
            raise ConfigError("deepfloyd-if is a pixel prior; use an RGB generator (generator.space=rgb)")
        image = render.image
        if image.shape[-2:] != (self.resolution, self.resolution):
            image = F.interpolate(
                image, (self.resolution, self.resolution), mode="bilinear", align_corners=False, antialias=True
            )
        return image * 2 - 1

    def decode(self, x: Tensor) -> Tensor:
        return ((x + 1) / 2).clamp(0, 1)

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
        t_in = t.to(device).repeat(copies)
        states = conditioning_batch(cond.cond, cond.uncond, cond.negative).to(device, self.dtype)
        output = self._unet(x_in.to(self.dtype), t_in, encoder_hidden_states=states).sample.float()
        # learned variance: [eps, variance interpolation] along channels; keep eps
        output = output[:, : self.channels]
        eps = epsilon_from_output(output, x_in, self._alphas.to(device)[t_in], self.prediction_type)
        eps_c, eps_u, eps_n = split_predictions(eps.to(x_t.device), batch, cond.negative is not None)
        return NoisePrediction(cond=eps_c, uncond=eps_u, negative=eps_n, negative_weights=cond.negative_weights)
