"""Options of the `shapes-learned` training (no torch). Every field is a flag of `python -m sds_shapes_learned`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    """A DeepFloyd IF stage-I (or, `format` "sd", Stable Diffusion 1.x; "sd3", Stable Diffusion 3;
    "zero123", Zero-1-to-3) format model trained on renders of the shapes world (docs/design.md)."""

    out: str = "runs/shapes-learned"  # state (checkpoint, loss log, data cache, exported folder)
    # "if": IF stage I, a pixel model (shapes-learned); "sd": SD 1.x, a KL autoencoder trained
    # first, then a latent UNet (shapes-learned-sd; `--format sd` takes SD_DEFAULTS for the
    # options not given); "sd3": SD3, a 16-channel KL autoencoder trained first, then an MMDiT by
    # rectified flow (shapes-learned-flow; SD3_DEFAULTS); "zero123": Zero-1-to-3, SD's autoencoder
    # trained first, then an image- and camera-conditioned latent UNet on pairs of views
    # (shapes-zero123; ZERO123_DEFAULTS)
    format: str = "if"
    seed: int = 0
    # The world narrowed for the learned model (the issue allows it; see the model card): the
    # four primitives of the geometry targets and four well separated colours.
    primitives: tuple[str, ...] = ("sphere", "cube", "cone", "torus")
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
    resolution: int = 32  # IF stage I is 64 x 64; 32 x 32 fits the CPU budget (a deviation)
    cameras: int = 16384  # A.2 cameras and lights traced once, cached under `out`
    supersample: int = 2  # anti-aliasing of the training renders (samples per pixel side)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # as the `shapes` prior
    # shading modes of the training images (§3.1 albedo, lambertian, textureless): textureless
    # images are grey whatever the prompt's colour, so they are kept rare
    shading_probabilities: tuple[float, float, float] = (0.45, 0.45, 0.1)
    # §3.2 view suffix (", front view" ...) from the camera's label; the rest plain prompts
    view_suffix_probability: float = 0.9
    caption_dropout: float = 0.1  # empty caption, for classifier-free guidance (Imagen: 10%)
    # the UNet: IF's block types (ResnetDownsample, SimpleCrossAttn ...), narrowed and shallower
    unet_channels: tuple[int, ...] = (32, 64, 96)
    layers_per_block: int = 1
    attention_head_dim: int = 16  # a head size, as IF's 64
    # the T5 encoder (T5 v1.1 family, gated GELU), tiny and trained with the UNet (IF's is frozen
    # and pretrained; none exists here); max_length as the IF pipeline and the deepfloyd-if backend
    t5_width: int = 64
    t5_layers: int = 2
    t5_heads: int = 4
    train_text_encoder: bool = True
    # format "sd": the CLIP text transformer (SD 1.5's ViT-L/14 text tower), trained with the UNet
    clip_width: int = 64
    clip_layers: int = 2
    clip_heads: int = 4
    # format "sd": the KL autoencoder (SD 1.5's four levels, a downscale of 8, widths / 8), trained
    # first for `vae_steps` on L1 + KL (LDM's kl-f8 weight 1e-6; its LPIPS and GAN terms need
    # pretrained or adversarial networks: left out, a deviation), then frozen
    vae_channels: tuple[int, ...] = (16, 32, 64, 64)
    vae_steps: int = 2000
    vae_batch_size: int = 16
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    # format "sd3": SD3's second CLIP text tower (OpenCLIP bigG's, 1280 / 768 of CLIP L's width),
    # both with projections, trained with the transformer
    openclip_width: int = 112
    openclip_layers: int = 2
    # format "sd3": the MMDiT (SD3 medium's SD3Transformer2DModel: 24 joint layers of 24 heads of
    # 64 on 2 x 2 patches, narrowed); joint_attention_dim is T5's width in SD3 (4096), the width the
    # text tokens enter at (CLIP L + G's states zero-padded to it); T5 is absent, its `t5_tokens`
    # tokens zeros as StableDiffusion3Pipeline makes them without T5 (its max_sequence_length 256)
    mmdit_layers: int = 4
    mmdit_heads: int = 4
    mmdit_head_dim: int = 32
    patch_size: int = 2
    joint_attention_dim: int = 256
    t5_tokens: int = 256
    # format "zero123": CLIP ViT-L/14's vision tower (1024 wide, 24 layers of 16 heads, patches of
    # 14 on 224 px, a 768 projection), narrowed, on the renders' side; trained with the UNet
    # (Zero-1-to-3 fine-tunes a pretrained one; none exists here)
    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    vision_patch: int = 8
    vision_projection: int = 64
    # format "zero123": a Stable Diffusion format folder (`unet/`, `vae/`) to start from, as
    # Zero-1-to-3 fine-tunes a pretrained Stable Diffusion (Liu et al. 2023, §3.1-3.2; its repository
    # starts from the image-conditioned `sd-image-conditioned-v2.ckpt`): its autoencoder is taken
    # frozen (no autoencoder stage) and its UNet's weights start the 8-channel UNet, the weights of
    # the reference's four input channels zero (`zero123_model.initialise`); a shipped model's name
    # (shapes-learned-sd) or a folder; "" trains both from scratch
    init: str = ""
    # format "sd3": rectified flow (Esser et al. 2024, §3 and §3.1): x_t = (1 - t) x + t eps, the
    # target eps - x, t logit-normal (`logit_mean`, `logit_std`: their rf/lognorm(0.00, 1.00)); the
    # exported scheduler's time shift (SD3 medium's 3.0)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    flow_shift: float = 3.0
    max_length: int = 77
    batch_size: int = 32
    lr: float = 5e-4
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    # improved DDPM's hybrid objective for learned variance: L_simple + lambda L_vlb (lambda 0.001)
    vlb_weight: float = 0.001
    steps: int = 40000  # total optimiser steps; a resumed run continues to this count
    # data-parallel processes on this machine, one CPU thread each (torch.distributed, gloo): the
    # batch is split between them and the gradients averaged, so the update is the batch's; the
    # images drawn depend on the count (each worker has its own seeded stream), so changing it on
    # resume changes the draws from that step on
    workers: int = 1
    checkpoint_minutes: float = 5.0  # state written atomically this often (and at the end)
    log_every: int = 50
    extra: dict[str, str] = field(default_factory=dict)  # free notes copied into the model card


# `--format sd`: the options of the Stable Diffusion format model that differ from IF's defaults
# (64 x 64 renders, 8 x 8 x 4 latents; SD 1.5's four UNet levels at its 1:2:4:4 ratio, 320 / 24
# times narrower, so that the weights stay under 25 MB; SD 1.5's attention_head_dim 8, which
# diffusers reads as a head count)
SD_DEFAULTS: dict[str, object] = {
    "out": "runs/shapes-learned-sd",
    "resolution": 64,
    "unet_channels": (24, 48, 96, 96),
    "attention_head_dim": 8,
}
# `--format sd3`: the SD format's sizes for the renders and the autoencoder (64 x 64 renders, 8 x 8
# x 16 latents, 4 x 4 patches of 2 x 2), the transformer at its defaults above, and 32 zero T5
# tokens instead of the SD3 pipeline's 256 (a deviation: on this project's CPU the 256 were most
# of a transformer step's cost; the model is then loaded with `guidance.max_sequence_length=32`,
# which the registration, the card and the benchmark read from training.json)
SD3_DEFAULTS: dict[str, object] = {
    "out": "runs/shapes-learned-flow",
    "resolution": 64,
    "t5_tokens": 32,
}
# `--format zero123`: Zero-1-to-3's format on the SD format's sizes (64 x 64 renders, 8 x 8 x 4
# latents, the same UNet widths), trained on pairs of views of one object (`data.sample_pairs`)
ZERO123_DEFAULTS: dict[str, object] = {
    "out": "runs/shapes-zero123",
    "resolution": 64,
    "unet_channels": (24, 48, 96, 96),
    "attention_head_dim": 8,
}
FORMATS = ("if", "sd", "sd3", "zero123")
# the formats whose diffusion model works on the latents of an autoencoder trained first
LATENT_FORMATS = ("sd", "sd3", "zero123")
