"""Zero-1-to-3 (Liu et al., "Zero-1-to-3: Zero-shot One Image to 3D Object", ICCV 2023) and Stable
Zero123 (Stability AI, 2023) as an image-conditioned SDS prior.

The diffusers layout of kxic/zero123-xl (the conversion kxhit/zero123-hf lists, loaded by the
diffusers community pipeline `pipeline_zero1to3.py`), component by component with `from_pretrained`:

- `unet`: Stable Diffusion 1.x's UNet with 8 input channels, the noisy latent concatenated with the
  reference image's VAE latent (the posterior's mode, not multiplied by the scaling factor: the
  original `encode_first_stage(...).mode()` and the community pipeline leave it unscaled);
- `vae`: SD's KL autoencoder; the latents of the renders are scaled by its `scaling_factor`;
- `image_encoder` + `feature_extractor`: CLIP ViT-L/14 (`CLIPVisionModelWithProjection`) and its
  `CLIPImageProcessor`; the UNet cross-attends to one token,
  `cc_projection([image_embeds, camera])`, a Linear 772 -> 768;
- `cc_projection` (ashawkey's ports, ashawkey/zero123-xl-diffusers and
  ashawkey/stable-zero123-diffusers, name it `clip_camera_projection`): a `CCProjection` /
  `CLIPCameraProjection` in the community code, not a diffusers class, so it is read here as the
  plain Linear it is (its one weight and bias from a safetensors file, no class of the folder's
  own);
- `scheduler`: DDIM's config of SD's scaled-linear DDPM schedule; only its alphas-bar are used.

The relative camera of a view at (elevation, azimuth, distance) from the reference at (e0, a0, r0),
in Zero-1-to-3's polar angle (90 deg - elevation), as threestudio's `zero123_guidance.py` builds it:
    zero123:        [rad((90 - e) - (90 - e0)), sin(rad(a - a0)), cos(rad(a - a0)), r - r0]
    stable-zero123: [rad((90 - e) - (90 - e0)), sin(rad(a - a0)), cos(rad(a - a0)), rad(90 - e0)]
Stable Zero123 replaces the radius difference by the reference view's own polar angle, in radians
(threestudio's `stable_zero123_guidance.py`, `get_cond`; ComfyUI's `nodes_stable3d.py` is its
e0 = 0 case; checked against both in session 36). sds's azimuth
(z up, counter-clockwise from +x, `sds_core.cameras`) is Zero-1-to-3's (atan2(y, x) of its z-up
Objaverse cameras), so the angles are used as they are.

Classifier-free guidance over the image: the unconditional branch has the projected embedding and
the reference latent zeroed (Zero-1-to-3's `gradio_new.py` and threestudio zero them so).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sds_core.api import BuildContext, CameraBatch, ConfigError, NoisePrediction, Render, SdsError
from sds_guidance._diffusers import (
    cached_snapshot,
    compile_for,
    compile_wanted,
    declare_background,
    encode_render,
    epsilon_from_output,
    freeze,
    hub_kwargs,
    load_part,
    load_scheduler_and_unet,
    module_device,
    place,
    quiet_loading,
    resolve_dtype,
    use_safetensors,
)
from sds_guidance.config import Zero123Config

PROJECTIONS = ("cc_projection", "clip_camera_projection")  # Zero-1-to-3 XL's folder, ashawkey's ports
CAMERA_DIM = 4


@dataclass
class Zero123Conditioning:
    """Per view: the projected image-and-camera token (B, 1, D) and the reference latent (B, 4, h, w)."""

    cond: Tensor
    concat: Tensor


def relative_camera(cameras: CameraBatch, reference: CameraBatch, encoding: str) -> Tensor:
    """(B, 4) relative cameras of `cameras` from the one `reference` camera (see the module doc)."""
    elevation, azimuth, distance = cameras.elevation.float(), cameras.azimuth.float(), cameras.distance.float()
    e0, a0, r0 = (reference.elevation[0].float(), reference.azimuth[0].float(), reference.distance[0].float())
    polar = torch.deg2rad((90.0 - elevation) - (90.0 - e0))
    turn = torch.deg2rad(azimuth - a0)
    last = distance - r0 if encoding == "zero123" else torch.deg2rad(90.0 - e0).expand_as(distance)
    return torch.stack([polar, torch.sin(turn), torch.cos(turn), last], dim=-1)


class Zero123Guidance:
    """A frozen Zero-1-to-3 UNet + VAE + CLIP image encoder, conditioned on one reference image."""

    space = "latent"
    what = "Zero-1-to-3"

    def __init__(self, config: Zero123Config, context: BuildContext) -> None:
        from diffusers import AutoencoderKL

        with quiet_loading():  # without torchvision, transformers names its PIL fallback at the import
            from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        self.config = config
        self.device = torch.device(context.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        compiling = compile_wanted(config, self.device)
        model, extra = config.model, hub_kwargs(config.variant, config.revision)
        safe = use_safetensors(config.allow_pickled_weights)
        declare_background(self, config)

        self.scheduler, self.unet = load_scheduler_and_unet(model, self.what, config, self.device, self.dtype)
        self.vae = load_part(
            config,
            self.what,
            "vae",
            lambda: AutoencoderKL.from_pretrained(
                model, subfolder="vae", torch_dtype=self.dtype, use_safetensors=safe, **extra
            ),
        )
        self.image_encoder = load_part(
            config,
            self.what,
            "image_encoder",
            lambda: CLIPVisionModelWithProjection.from_pretrained(
                model,
                subfolder="image_encoder",
                torch_dtype=self.dtype,
                use_safetensors=safe,
                trust_remote_code=False,
                **extra,
            ),
        )
        self.processor = load_part(
            config,
            self.what,
            "feature_extractor",
            lambda: CLIPImageProcessor.from_pretrained(
                model, subfolder="feature_extractor", revision=config.revision, trust_remote_code=False
            ),
        )
        embed = int(self.image_encoder.config.projection_dim)
        self.projection = load_projection(config, embed, int(self.unet.config.cross_attention_dim))
        freeze(self.vae, self.image_encoder, self.projection)

        in_channels, out_channels = int(self.unet.config.in_channels), int(self.unet.config.out_channels)
        if in_channels != 2 * out_channels:
            raise SdsError(
                f"{model}/unet takes {in_channels} input channels; a Zero-1-to-3 UNet takes twice its "
                f"{out_channels} latent channels (the noisy latent and the reference's)"
            )
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = config.resolution or int(self.unet.config.sample_size) * self.vae_scale
        if self.resolution % self.vae_scale:
            raise ConfigError(f"guidance.resolution must be a multiple of {self.vae_scale}, not {self.resolution}")
        self.channels = out_channels
        self.latent_resolution = self.resolution // self.vae_scale
        self.default_guidance_scale = config.guidance_scale
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self.prediction_type = str(self.scheduler.config.prediction_type)
        self._alphas = self.scheduler.alphas_cumprod.to(torch.float32)
        self.scaling_factor = float(getattr(self.vae.config, "scaling_factor", 0.18215))
        place([self.unet, self.vae, self.image_encoder, self.projection], self.device, self.dtype, False)
        self._unet = compile_for(self.unet, config, compiling)
        self.reference: CameraBatch | None = None
        self.image_embeds: Tensor | None = None
        self.reference_latent: Tensor | None = None

    # --- the reference image (sds_core.reference.ImageConditioned) -------------------------

    def set_reference(self, image: Tensor, camera: CameraBatch) -> None:
        """Encode the reference (1, 3, H, W) RGB in [0, 1] on white: CLIP's image embedding and
        the VAE latent (mode, unscaled) the UNet is concatenated with."""
        with torch.no_grad():
            pixels = self.processor(images=[image[0].float().cpu()], do_rescale=False, return_tensors="pt")
            values = pixels["pixel_values"].to(module_device(self.image_encoder, self.device), self.dtype)
            self.image_embeds = self.image_encoder(values).image_embeds.float()
            side = (self.resolution, self.resolution)
            x = F.interpolate(image.float(), side, mode="bilinear", align_corners=False, antialias=True)
            x = (x * 2 - 1).to(module_device(self.vae, self.device), self.dtype)
            self.reference_latent = self.vae.encode(x).latent_dist.mode().float()
        self.reference = camera

    # --- the Guidance protocol --------------------------------------------------------------

    def alphas_cumprod(self) -> Tensor:
        return self._alphas

    def prepare(self, render: Render) -> Tensor:
        """Latents of the render: RGB in [0, 1] resized and VAE-encoded (with gradient), scaled."""
        moments = lambda x: self.vae.encode(x).latent_dist.parameters  # noqa: E731 (eager: no compiled encoder)
        device = module_device(self.vae, self.device)
        args = (self.channels, self.resolution, moments, device, self.dtype, self.config.encode)
        latents, given = encode_render(render, *args)
        return latents if given else (latents * self.scaling_factor).float()

    def decode(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            z = (x / self.scaling_factor).to(module_device(self.vae, self.device), self.dtype)
            image = self.vae.decode(z).sample
        return ((image.float() + 1) / 2).clamp(0, 1)

    def condition(self, render: Render, cameras: CameraBatch | None) -> Zero123Conditioning:
        """The image-and-camera token of each view and the reference latent."""
        if self.reference is None or self.image_embeds is None or self.reference_latent is None:
            raise ConfigError("the zero123 guidance has no reference image; pass one with --image PATH")
        if cameras is None:
            raise ConfigError("the zero123 guidance conditions on each view's camera; use a 3D generator")
        batch = render.image.shape[0]
        device = module_device(self.projection, self.device)
        camera = relative_camera(cameras, self.reference, self.config.camera_encoding).to(device)
        embeds = self.image_embeds.to(device).expand(batch, -1)
        with torch.no_grad():
            token = self.projection(torch.cat([embeds, camera], dim=-1).to(self.dtype))[:, None]
        concat = self.reference_latent.expand(batch, -1, -1, -1)
        return Zero123Conditioning(cond=token, concat=concat)

    def predict_noise(self, x_t: Tensor, t: Tensor, conditioning: Any) -> NoisePrediction:
        cond: Zero123Conditioning = conditioning
        batch = x_t.shape[0]
        device = module_device(self.unet, self.device)
        if cond.concat.shape[-2:] != x_t.shape[-2:]:
            raise ConfigError(
                f"the latents are {tuple(x_t.shape[-2:])} and the reference latent {tuple(cond.concat.shape[-2:])}; "
                "render at the guidance's resolution"
            )
        x_in = x_t.to(device, torch.float32).repeat(2, 1, 1, 1)
        concat = torch.cat([cond.concat, torch.zeros_like(cond.concat)]).to(device, torch.float32)
        states = torch.cat([cond.cond, torch.zeros_like(cond.cond)]).to(device, self.dtype)
        model_in = torch.cat([x_in, concat], dim=1).to(self.dtype)
        t_in = t.to(device).repeat(2)
        output = self._unet(model_in, t_in, encoder_hidden_states=states).sample.float()
        eps = epsilon_from_output(output, x_in, self._alphas.to(device)[t_in], self.prediction_type)
        eps_c, eps_u = eps.to(x_t.device).split(batch)
        return NoisePrediction(cond=eps_c, uncond=eps_u)


def _model_folder(config: Zero123Config) -> Path | None:
    """The model as a local folder: the folder itself, or a hub id's snapshot in the local cache."""
    path = Path(config.model).expanduser()
    return path if path.is_dir() else cached_snapshot(config.model, config.revision)


def load_projection(config: Zero123Config, embed: int, width: int) -> torch.nn.Linear:
    """The camera projection, Linear(embed + 4 -> width), from `cc_projection/` or
    `clip_camera_projection/`: its safetensors file (a `.bin` only with allow_pickled_weights, read
    by `sds_core.api.load_plain`, never unpickled beyond plain tensors)."""
    folder = _model_folder(config)
    found = None if folder is None else next((folder / p for p in PROJECTIONS if (folder / p).is_dir()), None)
    if found is None:
        raise SdsError(
            f"{config.model} has no camera projection folder ({' or '.join(PROJECTIONS)}); "
            "pass a Zero-1-to-3 or Stable Zero123 folder in diffusers layout"
        )
    state = _projection_state(found, config)
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    biases = [v for k, v in state.items() if k.endswith("bias") and v.dim() == 1]
    expected = (width, embed + CAMERA_DIM)
    if len(weights) != 1 or len(biases) != 1 or tuple(weights[0].shape) != expected:
        shapes = [tuple(v.shape) for v in state.values()]
        raise SdsError(f"{found} does not hold one Linear {expected[1]} -> {expected[0]} (it holds {shapes})")
    _check_config(found, expected)
    linear = torch.nn.Linear(expected[1], expected[0])
    with torch.no_grad():
        linear.weight.copy_(weights[0])
        linear.bias.copy_(biases[0])
    return linear


def _projection_state(folder: Path, config: Zero123Config) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from sds_core.api import load_plain

    tensors = sorted(folder.glob("*.safetensors"))
    try:
        if tensors:
            return load_file(str(tensors[0]))
        pickled = sorted(folder.glob("*.bin"))
        if pickled and config.allow_pickled_weights:
            state = load_plain(pickled[0], map_location="cpu")
            if isinstance(state, dict) and all(isinstance(v, Tensor) for v in state.values()):
                return state
            raise SdsError(f"{pickled[0]} holds no plain mapping of tensors")
    except (OSError, SafetensorError) as exc:
        raise SdsError(f"{folder} holds a damaged weight file ({type(exc).__name__})") from None
    if sorted(folder.glob("*.bin")):
        raise SdsError(
            f"{folder} holds only pickled weights (.bin), which can run code when loaded; convert them "
            "to safetensors, or set guidance.allow_pickled_weights=true if you trust the folder"
        )
    raise SdsError(f"{folder} holds no weights (diffusion_pytorch_model.safetensors)")


def _check_config(folder: Path, expected: tuple[int, int]) -> None:
    """The projection's config.json, when it gives sizes, agrees with its weights (community
    CCProjection: in_channel / out_channel; CLIPCameraProjection: embedding_dim + additional_embeddings)."""
    path = folder / "config.json"
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8")[:100_000])
    except (OSError, ValueError):
        raise SdsError(f"{path} cannot be read as JSON") from None
    if not isinstance(data, dict):
        raise SdsError(f"{path} is not a JSON object")
    sizes = (data.get("out_channel"), data.get("in_channel"))
    if "embedding_dim" in data:
        dim = data["embedding_dim"]
        extra = data.get("additional_embeddings", CAMERA_DIM)
        sizes = (dim, dim + extra if isinstance(dim, int) and isinstance(extra, int) else None)
    if all(isinstance(s, int) for s in sizes) and tuple(sizes) != expected:
        raise SdsError(
            f"{path} describes a Linear {sizes[1]} -> {sizes[0]}, its weights {expected[1]} -> {expected[0]}"
        )
