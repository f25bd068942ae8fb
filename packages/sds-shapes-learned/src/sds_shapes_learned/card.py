"""The model card written beside the weights (README.md of the exported folder)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sds_shapes_learned.config import TrainConfig
from sds_shapes_learned.plugin import SHAPES_LEARNED, SHAPES_LEARNED_FLOW, SHAPES_LEARNED_SD, SHAPES_ZERO123

COMMAND = "OMP_NUM_THREADS=1 python -m sds_shapes_learned{format} --out {out}"
# each format's model name, run folder and model folder
NAMES = {
    "if": (SHAPES_LEARNED.name, "runs/shapes-learned", SHAPES_LEARNED),
    "sd": (SHAPES_LEARNED_SD.name, "runs/shapes-learned-sd", SHAPES_LEARNED_SD),
    "sd3": (SHAPES_LEARNED_FLOW.name, "runs/shapes-learned-flow", SHAPES_LEARNED_FLOW),
    "zero123": (SHAPES_ZERO123.name, "runs/shapes-zero123", SHAPES_ZERO123),
}


def _source_path(folder: Path) -> str:
    """Where a registered model folder lives in this repository's source tree."""
    return f"packages/sds-shapes-learned/src/sds_shapes_learned/{folder.relative_to(folder.parents[1]).as_posix()}"


def _commands(cfg: TrainConfig, step: int, segments: list[dict[str, int]]) -> list[str]:
    """The commands that trained these weights, one per stretch of one worker count, then the export."""
    _, out, folder = NAMES[cfg.format]
    command = COMMAND.format(format="" if cfg.format == "if" else f" --format {cfg.format}", out=out)
    if cfg.init:
        command += f" --init {cfg.init}"
    lines = []
    for i, segment in enumerate(segments):
        end = segments[i + 1]["step"] if i + 1 < len(segments) else step
        workers = f" --workers {segment['workers']}" if segment["workers"] > 1 else ""
        lines.append(f"{command}{workers} --steps {end}")
    ship = _source_path(folder)
    lines.append(f"{command.removeprefix('OMP_NUM_THREADS=1 ')} --ship {ship}")
    return ["```", *lines, "```"]


def weight_digests(folder: Path) -> list[str]:
    """`sha256sum` lines (digest, two spaces, relative path) of the weight files in `folder`, sorted
    by path, so that a re-run's export can be compared with `sha256sum -c`."""
    files = sorted(folder.rglob("*.safetensors"), key=lambda f: f.relative_to(folder).as_posix())
    return [f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.relative_to(folder).as_posix()}" for f in files]


def _digests(lines: list[str]) -> list[str]:
    if not lines:
        return []
    return [
        "## Weight files (SHA-256)",
        "To compare a re-run of the commands above with these weights, run `sha256sum -c` on these lines in its",
        "exported folder. Floats round differently on another CPU from the first steps, so there only the figures",
        "can compare.",
        "",
        "```",
        *lines,
        "```",
        "",
    ]


def _curve(log: list[dict[str, float]], rows: int = 12, flow: bool = False) -> list[str]:
    """The loss log thinned to about `rows` rows (means over each stretch of entries); `flow`: the
    MSE is the velocity's (SD3)."""
    if not log:
        return ["(no steps yet)"]
    size = max(1, len(log) // rows)
    names = {"mse": "velocity MSE" if flow else "noise MSE", "vlb": "L_vlb term"}
    keys = [k for k in names if any(e[k] for e in log)]  # SD's fixed variance logs no L_vlb
    lines = ["| steps | " + " | ".join(names[k] for k in keys) + " | seconds |", "| --- " * (len(keys) + 2) + "|"]
    for start in range(0, len(log), size):
        part = log[start : start + size]
        means = " | ".join(f"{sum(e[k] for e in part) / len(part):.4f}" for k in keys)
        lines.append(f"| {part[0]['step']}-{part[-1]['step']} | {means} | {part[-1]['elapsed_s']:.0f} |")
    return lines


def model_card(
    cfg: TrainConfig,
    step: int,
    log: list[dict[str, Any]],
    segments: list[dict[str, int]] | None = None,
    figures: str = "",
    vae_log: list[dict[str, Any]] | None = None,
    scaling_factor: float | None = None,
    digests: list[str] | None = None,
    shift_factor: float | None = None,
) -> str:
    """Data, model, training, loss curve and the commands that made the weights; `digests`:
    `weight_digests` of the exported folder; `figures`: Markdown of measurements on these weights,
    appended as they are; `scaling_factor`, `shift_factor`: the autoencoder's (SD formats)."""
    segments = segments or [{"step": 0, "workers": cfg.workers}]
    sd, flow, pairs = cfg.format == "sd", cfg.format == "sd3", cfg.format == "zero123"
    if flow:
        model_lines = _sd3_model(cfg, scaling_factor, shift_factor)
    elif pairs:
        model_lines = _zero123_model(cfg, scaling_factor)
    else:
        model_lines = _sd_model(cfg, scaling_factor) if sd else _if_model(cfg)
    if flow:
        objective = (
            f"the velocity MSE of rectified flow (SD3: x_t = (1 - t) x + t eps, target eps - x, t logit-normal "
            f"m {cfg.logit_mean} s {cfg.logit_std})"
        )
    else:
        objective = (
            "the noise MSE (SD's fixed variance)" if sd or pairs else f"hybrid loss L_simple + {cfg.vlb_weight} L_vlb"
        )
    if pairs:
        conditions = [
            "- Pairs: one object (primitive, colour, shading) seen from two independent A.2 cameras, each lit by its "
            "own A.2 light: the target view, and the reference view the model is conditioned on with the target's "
            "camera relative to it (Zero-1-to-3's [polar, sin azimuth, cos azimuth, radius] differences); the "
            f"condition (reference image and camera) dropped with probability {cfg.caption_dropout} (CFG).",
        ]
    else:
        conditions = [
            f'- Captions: "a <colour> <primitive>", with the §3.2 view suffix (", front view" ...) of the camera with '
            f"probability {cfg.view_suffix_probability}; empty with probability {cfg.caption_dropout} (CFG).",
        ]
    lines = [
        f"# {NAMES[cfg.format][0]}",
        "",
        *_intro(cfg.format),
        "",
        "## Data",
        f"- World (narrowed for the learned model): primitives {', '.join(cfg.primitives)}; colours "
        f"{', '.join(cfg.colours)}; background {cfg.background}.",
        f"- {cfg.cameras} cameras and lights from DreamFusion's A.2 distribution (seed {cfg.seed}), traced exactly at "
        f"{cfg.resolution} x {cfg.resolution} ({cfg.supersample}x{cfg.supersample} supersampled), 8-bit.",
        f"- Shading (albedo, lambertian, textureless) with probabilities {cfg.shading_probabilities}.",
        *conditions,
        "",
        "## Model",
        *model_lines,
        "",
        "## Training",
        *(_sd_training(cfg, vae_log or [], flow, pairs) if sd or flow or pairs else []),
        f"- {step} steps of batch {cfg.batch_size}, AdamW lr {cfg.lr} (warm-up {cfg.warmup_steps} steps), gradient "
        f"clip {cfg.grad_clip}, EMA {cfg.ema_decay} (weights here are the EMA), {objective}, seed {cfg.seed}.",
        "- Commands (each resumes the state in the folder and trains to `--steps`; a worker is a process with",
        "  its own seeded data stream, so the worker count of each stretch is part of what was trained):",
        "",
        *_commands(cfg, step, segments),
        "",
        "## Loss curve" + (" (the latent UNet)" if sd else " (the latent transformer)" if flow else ""),
        *_curve(log, flow=flow),
        "",
        *_digests(digests or []),
    ]
    if figures.strip():
        lines += [figures.strip(), ""]
    return "\n".join(lines)


def _intro(fmt: str) -> list[str]:
    if fmt == "zero123":
        return [
            "A Zero-1-to-3 format latent diffusion model (the diffusers layout of Zero-1-to-3 XL: UNet with 8 input",
            "channels, KL autoencoder, CLIP vision tower with projection and its image processor, the camera",
            "projection in cc_projection/, DDIM's scheduler config) trained on pairs of views of the sds-shapes",
            "world's objects. Made by `sds_shapes_learned --format zero123` (packages/sds-shapes-learned). Load it",
            "with the `zero123` backend and a reference image.",
        ]
    if fmt == "sd3":
        return [
            "A Stable Diffusion 3 format latent rectified-flow model (StableDiffusion3Pipeline folder: two CLIP",
            "tokenizers and text encoders with projections, no T5, a 16-channel KL autoencoder with scaling and",
            "shift factors, SD3Transformer2DModel with SD3 medium's MMDiT fields, FlowMatchEulerDiscreteScheduler)",
            "trained on renders of the sds-shapes world. Made by `sds_shapes_learned --format sd3`",
            "(packages/sds-shapes-learned). Load it with the `stable-diffusion-3` backend and `guidance.drop_t5=true`.",
        ]
    if fmt == "sd":
        return [
            "A Stable Diffusion 1.x format latent diffusion model (StableDiffusionPipeline folder: CLIP tokenizer",
            "and text encoder, KL autoencoder, UNet2DConditionModel with SD 1.5's block types, SD's PNDM scheduler",
            "config) trained on renders of the sds-shapes world. Made by `sds_shapes_learned --format sd`",
            "(packages/sds-shapes-learned).",
        ]
    return [
        "A DeepFloyd IF stage-I format pixel diffusion model (IFPipeline folder: T5 tokenizer and encoder,",
        "UNet2DConditionModel with IF's block types and learned variance, IF's DDPM scheduler) trained on",
        "renders of the sds-shapes world. Made by `sds_shapes_learned` (packages/sds-shapes-learned).",
    ]


def _if_model(cfg: TrainConfig) -> list[str]:
    unet = "/".join(str(c) for c in cfg.unet_channels)
    return [
        f"- UNet: {unet} channels, {cfg.layers_per_block} layer(s) per block, head size {cfg.attention_head_dim}, "
        "6 output channels (epsilon, variance interpolation).",
        f"- T5 v1.1-style encoder: width {cfg.t5_width}, {cfg.t5_layers} layers, {cfg.t5_heads} heads, "
        f"trained with the UNet: {cfg.train_text_encoder}; {cfg.max_length} tokens as the IF pipeline.",
    ]


def _autoencoder(
    cfg: TrainConfig, scaling_factor: float | None, sd3: bool = False, shift_factor: float | None = None
) -> str:
    """The KL autoencoder's line: its levels, latents and factors (SD3's: 16 channels and a shift factor)."""
    channels = 16 if sd3 else 4
    vae = "/".join(str(c) for c in cfg.vae_channels)
    side = cfg.resolution // 2 ** (len(cfg.vae_channels) - 1)

    def shown(value: float | None) -> str:
        return f"{value:.5f}" if value is not None else "not set yet"

    shift = f", shift factor {shown(shift_factor)} (their mean)" if sd3 else ""
    return (
        f"- KL autoencoder: {vae} channels, 1 layer per block, {channels} latent channels: {cfg.resolution} x "
        f"{cfg.resolution} images to {side} x {side} x {channels} latents; scaling factor {shown(scaling_factor)} "
        f"(1 / std of the latents){shift}."
    )


def _sd_model(cfg: TrainConfig, scaling_factor: float | None) -> list[str]:
    unet = "/".join(str(c) for c in cfg.unet_channels)
    return [
        _autoencoder(cfg, scaling_factor),
        f"- UNet: {unet} channels, {cfg.layers_per_block} layer(s) per block, {cfg.attention_head_dim} heads, "
        "4 output channels (epsilon).",
        f"- CLIP text transformer: width {cfg.clip_width}, {cfg.clip_layers} layers, {cfg.clip_heads} heads, trained "
        "with the UNet; a byte-level BPE whose merges spell the world's words as one token each; 77 tokens.",
    ]


def _zero123_model(cfg: TrainConfig, scaling_factor: float | None) -> list[str]:
    unet = "/".join(str(c) for c in cfg.unet_channels)
    autoencoder = (
        f"- Started from `{cfg.init}` (`--init`, as Zero-1-to-3 fine-tunes a pretrained Stable Diffusion): its KL "
        f"autoencoder, frozen (scaling factor {scaling_factor:.5f}), and its UNet's weights, the input weights of the "
        "reference latent's channels zero."
        if cfg.init and scaling_factor is not None
        else _autoencoder(cfg, scaling_factor)
    )
    return [
        autoencoder,
        f"- UNet: {unet} channels, {cfg.layers_per_block} layer(s) per block, {cfg.attention_head_dim} heads, "
        "8 input channels (the noisy latent and the reference's), 4 output channels (epsilon).",
        f"- CLIP vision tower with projection: width {cfg.vision_width}, {cfg.vision_layers} layers, "
        f"{cfg.vision_heads} heads, patches of {cfg.vision_patch} on {cfg.resolution} px, projection "
        f"{cfg.vision_projection}; the camera projection a Linear {cfg.vision_projection} + 4 -> "
        f"{cfg.vision_projection}; both trained with the UNet.",
        "- Load: `sds generate PROMPT --image REFERENCE --guidance shapes-zero123` (registered over the zero123 "
        "backend: the reference a render of the object on white at A.2's middle distance and field of view, "
        "docs/image-to-3d.md); another folder of this format with `--set guidance.model=FOLDER`.",
    ]


def _sd3_model(cfg: TrainConfig, scaling_factor: float | None, shift_factor: float | None) -> list[str]:
    return [
        _autoencoder(cfg, scaling_factor, sd3=True, shift_factor=shift_factor),
        f"- MMDiT: {cfg.mmdit_layers} joint layers of {cfg.mmdit_heads} heads of {cfg.mmdit_head_dim}, patch size "
        f"{cfg.patch_size}, joint attention dim {cfg.joint_attention_dim}, 16 output channels (velocity); the "
        f"scheduler's shift {cfg.flow_shift}.",
        f"- CLIP L and CLIP G text towers with projections: widths {cfg.clip_width} and {cfg.openclip_width}, "
        f"{cfg.clip_layers} and {cfg.openclip_layers} layers, {cfg.clip_heads} heads, trained with the transformer; "
        f"T5 absent (its {cfg.t5_tokens} tokens zeros, as the SD3 pipeline without text_encoder_3).",
        f"- Load: `--guidance stable-diffusion-3 --set guidance.model=FOLDER --set guidance.drop_t5=true --set "
        f"guidance.resolution={cfg.resolution} --set guidance.max_sequence_length={cfg.t5_tokens}` (the folder has "
        "no T5; the backend's draft preset would render past the positional table).",
    ]


def _sd_training(cfg: TrainConfig, vae_log: list[dict[str, Any]], flow: bool = False, pairs: bool = False) -> list[str]:
    last = vae_log[-1] if vae_log else None
    reached = (
        f" (last logged: L1 {last['l1']:.4f} a pixel in [-1, 1], KL {last['kl']:.1f}; {last['elapsed_s']:.0f} s)"
        if last
        else ""
    )
    if pairs and cfg.init:
        return [
            f"- The autoencoder is `{cfg.init}`'s, frozen. The UNet (from `{cfg.init}`'s), the image encoder and the "
            "camera projection are trained on its latents (drawn from its posterior, times the scaling factor; the "
            "reference's latent is the posterior's mode, unscaled):",
        ]
    return [
        f"- First the autoencoder: {cfg.vae_steps} steps of batch {cfg.vae_batch_size}, AdamW lr {cfg.vae_lr}, "
        f"L1 + {cfg.vae_kl_weight} KL (LDM's kl-f8 objective without its LPIPS and GAN terms){reached}, in one "
        "process with as many threads as `--workers`; then frozen. "
        + (
            "The transformer and the text encoders are then trained on its latents (drawn from its posterior, "
            "shifted and scaled):"
            if flow
            else "The UNet, the image encoder and the camera projection are then trained on its latents (drawn from "
            "its posterior, times the scaling factor; the reference's latent is the posterior's mode, unscaled):"
            if pairs
            else "The UNet and the text encoder are then trained on its latents (drawn from its posterior, times "
            "the scaling factor):"
        ),
    ]
