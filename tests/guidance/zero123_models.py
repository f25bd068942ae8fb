"""The tiny Zero-1-to-3 XL of tests/fixtures/configs/zero123-xl.json: the published components
(SD 1.x's UNet with 8 input channels, SD's VAE, CLIP ViT-L/14's vision tower with projection,
CLIP's image processor, DDIM's scheduler config, the 772 -> 768 camera projection) with only
widths, depths and the latent side shrunk, as tests/fixtures/published.py shrinks the others.
Saved in the diffusers folder layout of kxic/zero123-xl."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.fixtures.published import TEXT_DIVISOR, _fewer, _fields, _unet, _vae, published

NAME = "zero123-xl"
CAMERA_DIM = 4  # [d_polar, sin d_azimuth, cos d_azimuth, d_radius]


def tiny_config() -> dict[str, Any]:
    """zero123-xl.json with the CLIP widths divided as the text encoders' are, the UNet's and VAE's
    as published.py divides SD's; the UNet's cross-attention width is the shrunk projection's."""
    cfg = copy.deepcopy(published(NAME))
    vision = cfg["image_encoder"]
    for key in ("hidden_size", "intermediate_size", "projection_dim"):
        vision[key] //= TEXT_DIVISOR
    vision["num_hidden_layers"] = _fewer(vision["num_hidden_layers"], 6)
    width = vision["projection_dim"]
    _unet(cfg["unet"], width)  # cross_attention_dim: the projection's output, as 768 is published
    _vae(cfg["vae"])
    cfg["cc_projection"].update(in_channel=width + CAMERA_DIM, out_channel=width)
    return cfg


def build(folder: Path, projection_folder: str = "cc_projection") -> Path:
    """The tiny model with random weights (seed 0), saved to `folder` component by component."""
    import diffusers
    import torch
    import transformers
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = tiny_config()
    diffusers.UNet2DConditionModel.from_config(_fields(cfg["unet"])).save_pretrained(folder / "unet")
    diffusers.AutoencoderKL.from_config(_fields(cfg["vae"])).save_pretrained(folder / "vae")
    scheduler = getattr(diffusers, cfg["scheduler"]["_class_name"]).from_config(_fields(cfg["scheduler"]))
    scheduler.save_pretrained(folder / "scheduler")
    vision = transformers.CLIPVisionConfig(**_fields(cfg["image_encoder"]))
    transformers.CLIPVisionModelWithProjection(vision).save_pretrained(folder / "image_encoder")
    extractor = cfg["feature_extractor"]
    side = extractor["crop_size"]
    transformers.CLIPImageProcessor(
        size={"shortest_edge": extractor["size"]},
        crop_size={"height": side, "width": side},
        image_mean=extractor["image_mean"],
        image_std=extractor["image_std"],
        resample=extractor["resample"],
    ).save_pretrained(folder / "feature_extractor")
    projection = cfg["cc_projection"]
    linear = torch.nn.Linear(projection["in_channel"], projection["out_channel"])
    (folder / projection_folder).mkdir(parents=True)
    state = {"projection.weight": linear.weight.detach(), "projection.bias": linear.bias.detach()}
    save_file(state, str(folder / projection_folder / "diffusion_pytorch_model.safetensors"))
    (folder / projection_folder / "config.json").write_text(json.dumps(_fields(projection)))
    index = {"_class_name": cfg["pipeline"], "_diffusers_version": diffusers.__version__}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder
