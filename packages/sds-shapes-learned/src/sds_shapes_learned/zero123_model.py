"""The parts of a Zero-1-to-3 model, in the diffusers layout the `zero123` backend reads, sized for
the shapes world (`--format zero123`, shapes-zero123).

The fields that are not sizes are Zero-1-to-3 XL's as published (tests/fixtures/configs/zero123-xl.json):
SD 1.5's UNet block types with 8 input channels (the noisy latent and the reference image's latent)
and 4 output channels, epsilon prediction; SD's KL autoencoder (the SD format's, `sd_model`); CLIP
ViT-L/14's vision tower with its projection (quick GELU) and CLIP's image processor (its mean, std
and bicubic resampling); the camera projection, a Linear of the image embedding and the 4 numbers
of the relative camera back to the embedding's width, which the UNet cross-attends to as one
token; the scheduler (DDIM's config of SD's scaled-linear betas). `save_folder` writes what
`sds_guidance.zero123` loads component by component.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sds_core.api import ConfigError
from sds_shapes_learned import sd_model
from sds_shapes_learned.config import TrainConfig

CAMERA_DIM = 4  # [d_polar, sin d_azimuth, cos d_azimuth, d_radius] (Zero-1-to-3's relative camera)
PROJECTION = "cc_projection"  # Zero-1-to-3 XL's folder name (the backend also reads clip_camera_projection)
PIPELINE = "Zero1to3StableDiffusionPipeline"  # the diffusers community pipeline's class
# CLIP's image normalisation (CLIPImageProcessor's image_mean / image_std, as published)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Zero-1-to-3 XL's scheduler_config.json: SD 1.x's (`sd_model.SCHEDULER`) in DDIM's config, which
# has no PNDM step option and no thresholding
SCHEDULER: dict[str, Any] = {k: v for k, v in sd_model.SCHEDULER.items() if k not in ("skip_prk_steps", "thresholding")}


def unet_config(cfg: TrainConfig) -> dict[str, Any]:
    """SD 1.5's UNet fields narrowed to `cfg` (`sd_model.unet_config`), with Zero-1-to-3's 8 input
    channels and cross-attention at the camera projection's width."""
    return {**sd_model.unet_config(cfg), "in_channels": 8, "cross_attention_dim": cfg.vision_projection}


def vision_config(cfg: TrainConfig) -> dict[str, Any]:
    """CLIP ViT-L/14's vision tower fields (`CLIPVisionModelWithProjection`) with its sizes narrowed
    to `cfg`; the image side is the renders' (ViT-L/14 takes 224 px)."""
    return {
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "hidden_act": "quick_gelu",
        "hidden_size": cfg.vision_width,
        "image_size": cfg.resolution,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": cfg.vision_width * 4,  # 4096 / 1024
        "layer_norm_eps": 1e-05,
        "num_attention_heads": cfg.vision_heads,
        "num_channels": 3,
        "num_hidden_layers": cfg.vision_layers,
        "patch_size": cfg.vision_patch,
        "projection_dim": cfg.vision_projection,
    }


def processor(cfg: TrainConfig) -> Any:
    """CLIP's image processor at the renders' side (resize the shortest edge, centre crop,
    normalise; bicubic), which the backend runs on the reference image."""
    from transformers import CLIPImageProcessor

    side = cfg.resolution
    return CLIPImageProcessor(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        resample=3,
    )


def normalise(images: Any) -> Any:
    """What the processor makes of renders already at its side: (x - mean) / std, x the images
    in [0, 1] (its resize and crop leave them as they are)."""
    import torch

    mean = torch.tensor(CLIP_MEAN, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def build(cfg: TrainConfig) -> tuple[Any, Any, Any, Any]:
    """(processor, encoder, unet, scheduler) with fresh weights from the current torch seed; the
    encoder is a ModuleDict of the CLIP vision tower ("image_encoder") and the camera projection
    ("projection"), trained together; the scheduler is the DDPM one of SD's betas (what training
    adds noise with)."""
    import diffusers
    import torch
    import transformers

    vision = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**vision_config(cfg)))
    projection = torch.nn.Linear(cfg.vision_projection + CAMERA_DIM, cfg.vision_projection)
    # Zero-1-to-3's start (its ddpm.py): the embedding passed through unchanged, a zero bias
    torch.nn.init.eye_(projection.weight[:, : cfg.vision_projection])
    torch.nn.init.zeros_(projection.bias)
    encoder = torch.nn.ModuleDict({"image_encoder": vision, "projection": projection})
    unet = diffusers.UNet2DConditionModel.from_config(unet_config(cfg))
    scheduler = diffusers.DDPMScheduler.from_config(SCHEDULER)
    return processor(cfg), encoder, unet, scheduler


def init_folder(cfg: TrainConfig) -> Path:
    """The folder `cfg.init` names: a model shipped in this package (shapes-learned-sd) or a folder
    holding an SD format model's `unet/` and `vae/`."""
    shipped = Path(__file__).parent / "models" / cfg.init
    folder = shipped if "/" not in cfg.init and shipped.is_dir() else Path(cfg.init)
    if not (folder / "unet").is_dir() or not (folder / "vae").is_dir():
        raise ConfigError(f"--init {cfg.init} is neither a shipped model nor a folder with unet/ and vae/")
    return folder


def initial_vae(cfg: TrainConfig) -> Any:
    """The frozen autoencoder of `cfg.init` (safetensors only), with its scaling factor; refused
    unless it makes the 4-channel latents this format's UNet works on."""
    from diffusers import AutoencoderKL

    folder = init_folder(cfg) / "vae"
    try:
        vae = AutoencoderKL.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"--init {cfg.init}: {folder} is not a safetensors AutoencoderKL ({error})") from None
    if vae.config.latent_channels != 4:
        channels = vae.config.latent_channels
        raise ConfigError(f"--init {cfg.init}: its autoencoder makes {channels} latent channels, not 4")
    return vae.eval().requires_grad_(False)


def initialise(cfg: TrainConfig, unet: Any) -> None:
    """Start `unet` (8 input channels) from the UNet of `cfg.init` (4), as Zero-1-to-3 starts from
    Stable Diffusion: every weight copied, `conv_in`'s for the reference latent's channels zero, so
    that the first prediction is the pretrained UNet's whatever the reference; refused, in one
    sentence, when a weight's shape differs (other widths than `cfg`'s)."""
    import torch
    from safetensors.torch import load_file

    path = init_folder(cfg) / "unet" / "diffusion_pytorch_model.safetensors"
    try:
        pretrained = load_file(str(path))
    except (OSError, ValueError, RuntimeError) as error:
        raise ConfigError(f"--init {cfg.init}: {path} is not a readable safetensors file ({error})") from None
    ours = unet.state_dict()
    if set(pretrained) != set(ours):
        raise ConfigError(f"--init {cfg.init}: its UNet's weights are not those of --unet-channels {cfg.unet_channels}")
    weight = pretrained["conv_in.weight"]
    if weight.ndim != 4 or weight.shape[1] * 2 != ours["conv_in.weight"].shape[1]:
        raise ConfigError(f"--init {cfg.init}: its UNet does not take 4 input channels")
    pretrained["conv_in.weight"] = torch.cat([weight, torch.zeros_like(weight)], dim=1)
    wrong = [k for k, v in pretrained.items() if v.shape != ours[k].shape]
    if wrong:
        raise ConfigError(f"--init {cfg.init}: its UNet's {wrong[0]} has another shape than this model's")
    unet.load_state_dict(pretrained)


def condition(encoder: Any, vae: Any, references: Any, cameras: Any) -> tuple[Any, Any]:
    """(token (B, 1, D), reference latent (B, 4, h, w)) of references in [-1, 1] and their relative
    cameras (B, 4), as the `zero123` backend builds them: the projection of the CLIP image
    embedding joined with the camera, and the VAE posterior's mode, unscaled (Zero-1-to-3's
    `encode_first_stage(...).mode()`)."""
    import torch

    pixels = normalise((references + 1) / 2)
    embeds = encoder["image_encoder"](pixels).image_embeds
    token = encoder["projection"](torch.cat([embeds, cameras], dim=-1))[:, None]
    with torch.no_grad():
        latent = vae.encode(references).latent_dist.mode()
    return token, latent


def save_folder(folder: Path, proc: Any, encoder: Any, unet: Any, vae: Any) -> Path:
    """Save the parts in Zero-1-to-3 XL's diffusers layout (safetensors), with its DDIM scheduler config."""
    import diffusers
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    encoder["image_encoder"].save_pretrained(folder / "image_encoder")
    proc.save_pretrained(folder / "feature_extractor")
    diffusers.DDIMScheduler.from_config(SCHEDULER).save_pretrained(folder / "scheduler")
    linear = encoder["projection"]
    (folder / PROJECTION).mkdir()
    state = {"projection.weight": linear.weight.detach().contiguous(), "projection.bias": linear.bias.detach()}
    save_file(state, str(folder / PROJECTION / "diffusion_pytorch_model.safetensors"))
    sizes = {"_class_name": "CCProjection", "in_channel": linear.in_features, "out_channel": linear.out_features}
    (folder / PROJECTION / "config.json").write_text(json.dumps(sizes, indent=2) + "\n", encoding="utf-8")
    index = {"_class_name": PIPELINE, "_diffusers_version": diffusers.__version__}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return folder
