"""The model card written beside the weights (README.md of the exported folder)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sds_shapes_learned.config import TrainConfig
from sds_shapes_learned.plugin import SHAPES_LEARNED, SHAPES_LEARNED_SD

COMMAND = "OMP_NUM_THREADS=1 python -m sds_shapes_learned{format} --out {out}"


def _source_path(folder: Path) -> str:
    """Where a registered model folder lives in this repository's source tree."""
    return f"packages/sds-shapes-learned/src/sds_shapes_learned/{folder.relative_to(folder.parents[1]).as_posix()}"


def _commands(cfg: TrainConfig, step: int, segments: list[dict[str, int]]) -> list[str]:
    """The commands that trained these weights, one per stretch of one worker count, then the export."""
    sd = cfg.format == "sd"
    out = "runs/shapes-learned-sd" if sd else "runs/shapes-learned"
    command = COMMAND.format(format=" --format sd" if sd else "", out=out)
    lines = []
    for i, segment in enumerate(segments):
        end = segments[i + 1]["step"] if i + 1 < len(segments) else step
        workers = f" --workers {segment['workers']}" if segment["workers"] > 1 else ""
        lines.append(f"{command}{workers} --steps {end}")
    ship = _source_path(SHAPES_LEARNED_SD if sd else SHAPES_LEARNED)
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


def _curve(log: list[dict[str, float]], rows: int = 12) -> list[str]:
    """The loss log thinned to about `rows` rows (means over each stretch of entries)."""
    if not log:
        return ["(no steps yet)"]
    size = max(1, len(log) // rows)
    names = {"mse": "noise MSE", "vlb": "L_vlb term"}
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
) -> str:
    """Data, model, training, loss curve and the commands that made the weights; `digests`:
    `weight_digests` of the exported folder; `figures`: Markdown of measurements on these weights,
    appended as they are."""
    segments = segments or [{"step": 0, "workers": cfg.workers}]
    sd = cfg.format == "sd"
    lines = [
        f"# {SHAPES_LEARNED_SD.name if sd else SHAPES_LEARNED.name}",
        "",
        *_intro(sd),
        "",
        "## Data",
        f"- World (narrowed for the learned model): primitives {', '.join(cfg.primitives)}; colours "
        f"{', '.join(cfg.colours)}; background {cfg.background}.",
        f"- {cfg.cameras} cameras and lights from DreamFusion's A.2 distribution (seed {cfg.seed}), traced exactly at "
        f"{cfg.resolution} x {cfg.resolution} ({cfg.supersample}x{cfg.supersample} supersampled), 8-bit.",
        f"- Shading (albedo, lambertian, textureless) with probabilities {cfg.shading_probabilities}.",
        f'- Captions: "a <colour> <primitive>", with the §3.2 view suffix (", front view" ...) of the camera with '
        f"probability {cfg.view_suffix_probability}; empty with probability {cfg.caption_dropout} (CFG).",
        "",
        "## Model",
        *(_sd_model(cfg, scaling_factor) if sd else _if_model(cfg)),
        "",
        "## Training",
        *(_sd_training(cfg, vae_log or []) if sd else []),
        f"- {step} steps of batch {cfg.batch_size}, AdamW lr {cfg.lr} (warm-up {cfg.warmup_steps} steps), gradient "
        f"clip {cfg.grad_clip}, EMA {cfg.ema_decay} (weights here are the EMA), "
        + ("the noise MSE (SD's fixed variance)" if sd else f"hybrid loss L_simple + {cfg.vlb_weight} L_vlb")
        + f", seed {cfg.seed}.",
        "- Commands (each resumes the state in the folder and trains to `--steps`; a worker is a process with",
        "  its own seeded data stream, so the worker count of each stretch is part of what was trained):",
        "",
        *_commands(cfg, step, segments),
        "",
        "## Loss curve" + (" (the latent UNet)" if sd else ""),
        *_curve(log),
        "",
        *_digests(digests or []),
    ]
    if figures.strip():
        lines += [figures.strip(), ""]
    return "\n".join(lines)


def _intro(sd: bool) -> list[str]:
    if sd:
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


def _sd_model(cfg: TrainConfig, scaling_factor: float | None) -> list[str]:
    unet = "/".join(str(c) for c in cfg.unet_channels)
    vae = "/".join(str(c) for c in cfg.vae_channels)
    side = cfg.resolution // 2 ** (len(cfg.vae_channels) - 1)
    scale = f"{scaling_factor:.5f}" if scaling_factor is not None else "not set yet"
    return [
        f"- KL autoencoder: {vae} channels, 1 layer per block, 4 latent channels: {cfg.resolution} x "
        f"{cfg.resolution} images to {side} x {side} x 4 latents; scaling factor {scale} (1 / std of the latents).",
        f"- UNet: {unet} channels, {cfg.layers_per_block} layer(s) per block, {cfg.attention_head_dim} heads, "
        "4 output channels (epsilon).",
        f"- CLIP text transformer: width {cfg.clip_width}, {cfg.clip_layers} layers, {cfg.clip_heads} heads, trained "
        "with the UNet; a byte-level BPE whose merges spell the world's words as one token each; 77 tokens.",
    ]


def _sd_training(cfg: TrainConfig, vae_log: list[dict[str, Any]]) -> list[str]:
    last = vae_log[-1] if vae_log else None
    reached = (
        f" (last logged: L1 {last['l1']:.4f} a pixel in [-1, 1], KL {last['kl']:.1f}; {last['elapsed_s']:.0f} s)"
        if last
        else ""
    )
    return [
        f"- First the autoencoder: {cfg.vae_steps} steps of batch {cfg.vae_batch_size}, AdamW lr {cfg.vae_lr}, "
        f"L1 + {cfg.vae_kl_weight} KL (LDM's kl-f8 objective without its LPIPS and GAN terms){reached}, in one "
        "process with as many threads as `--workers`; then frozen. The UNet and the text encoder are then trained "
        "on its latents (drawn from its posterior, times the scaling factor):",
    ]
