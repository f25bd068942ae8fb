"""The model card written beside the weights (README.md of the exported folder)."""

from __future__ import annotations

from typing import Any

from sds_shapes.learned.config import TrainConfig
from sds_shapes.plugin import SHAPES_LEARNED

COMMAND = "OMP_NUM_THREADS=1 python -m sds_shapes.learned --out {out}"
# where the registered `shapes-learned` folder lives in this repository's source tree
SHIP = f"packages/sds-shapes/src/sds_shapes/{SHAPES_LEARNED.relative_to(SHAPES_LEARNED.parents[1]).as_posix()}"


def _commands(cfg: TrainConfig, step: int, segments: list[dict[str, int]]) -> list[str]:
    """The commands that trained these weights, one per stretch of one worker count, then the export."""
    out = "runs/shapes-learned"
    lines = []
    for i, segment in enumerate(segments):
        end = segments[i + 1]["step"] if i + 1 < len(segments) else step
        workers = f" --workers {segment['workers']}" if segment["workers"] > 1 else ""
        lines.append(f"{COMMAND.format(out=out)}{workers} --steps {end}")
    lines.append(f"python -m sds_shapes.learned --out {out} --ship {SHIP}")
    return ["```", *lines, "```"]


def _curve(log: list[dict[str, float]], rows: int = 12) -> list[str]:
    """The loss log thinned to about `rows` rows (means over each stretch of entries)."""
    if not log:
        return ["(no steps yet)"]
    size = max(1, len(log) // rows)
    lines = ["| steps | noise MSE | L_vlb term | seconds |", "| --- | --- | --- | --- |"]
    for start in range(0, len(log), size):
        part = log[start : start + size]
        mse = sum(e["mse"] for e in part) / len(part)
        vlb = sum(e["vlb"] for e in part) / len(part)
        lines.append(f"| {part[0]['step']}-{part[-1]['step']} | {mse:.4f} | {vlb:.4f} | {part[-1]['elapsed_s']:.0f} |")
    return lines


def model_card(
    cfg: TrainConfig,
    step: int,
    log: list[dict[str, Any]],
    segments: list[dict[str, int]] | None = None,
    figures: str = "",
) -> str:
    """Data, model, training, loss curve and the commands that made the weights; `figures`:
    Markdown of measurements on these weights, appended as they are."""
    segments = segments or [{"step": 0, "workers": cfg.workers}]
    unet = "/".join(str(c) for c in cfg.unet_channels)
    lines = [
        "# shapes-learned",
        "",
        "A DeepFloyd IF stage-I format pixel diffusion model (IFPipeline folder: T5 tokenizer and encoder,",
        "UNet2DConditionModel with IF's block types and learned variance, IF's DDPM scheduler) trained on",
        "renders of the sds-shapes world. Made by `sds_shapes.learned` (packages/sds-shapes).",
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
        f"- UNet: {unet} channels, {cfg.layers_per_block} layer(s) per block, head size {cfg.attention_head_dim}, "
        "6 output channels (epsilon, variance interpolation).",
        f"- T5 v1.1-style encoder: width {cfg.t5_width}, {cfg.t5_layers} layers, {cfg.t5_heads} heads, "
        f"trained with the UNet: {cfg.train_text_encoder}; {cfg.max_length} tokens as the IF pipeline.",
        "",
        "## Training",
        f"- {step} steps of batch {cfg.batch_size}, AdamW lr {cfg.lr} (warm-up {cfg.warmup_steps} steps), gradient "
        f"clip {cfg.grad_clip}, EMA {cfg.ema_decay} (weights here are the EMA), hybrid loss L_simple + "
        f"{cfg.vlb_weight} L_vlb, seed {cfg.seed}.",
        "- Commands (each resumes the state in the folder and trains to `--steps`; a worker is a process with",
        "  its own seeded data stream, so the worker count of each stretch is part of what was trained):",
        "",
        *_commands(cfg, step, segments),
        "",
        "## Loss curve",
        *_curve(log),
        "",
    ]
    if figures.strip():
        lines += [figures.strip(), ""]
    return "\n".join(lines)
