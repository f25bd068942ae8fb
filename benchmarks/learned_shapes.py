"""The learned priors `shapes-learned` (an IF stage-I format model trained on the shapes world),
`shapes-learned-sd` (a Stable Diffusion 1.x format one, `--model` its folder) and a Stable Diffusion 3
format one (`--format sd3`, `--model` its folder), judged against the world's ground truth (CPU).

1. A small classifier (primitive, colour) trained on exact renders from A.2 cameras that the
   model never saw; its held-out accuracy on other cameras is printed first (a judge weaker
   than ~95% says little about the samples).
2. Samples of the model (its DDPM scheduler: IF's with learned variance, SD's with fixed variance
   in latent space, decoded by its autoencoder; `--sampling-steps`, CFG `--cfg`), `--samples`
   per prompt: the share that show the prompt's primitive, its colour, both. An SD3 folder samples
   by its own pipeline (StableDiffusion3Pipeline without T5: Euler steps over its flow-matching
   scheduler's shifted sigmas, CFG on the velocity).
3. With `--sds`: `sds generate` with the model (the deepfloyd-if, stable-diffusion or
   stable-diffusion-3 backend, the last with `drop_t5`, on the folder, which is what
   `shapes-learned` / `shapes-learned-sd` is) on the nerf and mesh generators, draft preset
   (A.2's cameras), per object and seed, then `sds eval geometry`; and the exact `shapes` prior
   beside it. A cube's row also gives its yaw-free IoU (the best over
   turns about z: view-captioned images cannot fix the yaw of a shape a quarter turn leaves
   unchanged; `sds_shapes.metrics.yaw_free_iou`).
4. With `--autoencoder` (SD folders): the autoencoder's PSNR on renders from unseen A.2 cameras.

    python benchmarks/learned_shapes.py --model /work/train15/export          # an intermediate checkpoint
    python benchmarks/learned_shapes.py --sds --seeds 0 1                      # the shipped model, with SDS
    SD=packages/sds-shapes-learned/src/sds_shapes_learned/models/shapes-learned-sd
    python benchmarks/learned_shapes.py --model $SD --autoencoder             # the shipped SD model
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "packages/sds-shapes-learned/src/sds_shapes_learned/models/shapes-learned"


def _training_config(model: Path) -> Any:
    """The TrainConfig the model was trained with (its folder's training.json)."""
    from sds_shapes_learned.config import TrainConfig

    saved = json.loads((model / "training.json").read_text())["config"]
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    return TrainConfig(**fields)


def make_classifier(primitives: int, colours: int) -> Any:
    """A small CNN with two heads: the primitive, and the colour (the last class: none, textureless)."""
    import torch.nn as nn

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
        ]

    layers: list[nn.Module] = []
    for cin, cout in ((3, 24), (24, 48), (48, 96)):
        layers += [*block(cin, cout), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
    trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return nn.ModuleDict({"trunk": trunk, "primitive": nn.Linear(96, primitives), "colour": nn.Linear(96, colours + 1)})


def _labelled(bank: Any, cfg: Any, size: int, generator: Any) -> tuple[Any, Any, Any]:
    """Renders of random (camera, primitive, colour, mode) in [-1, 1] with their two labels."""
    from sds_shapes_learned.data import sample_batch

    batch = sample_batch(bank, replace(cfg, caption_dropout=0.0), size, generator)
    textureless = batch.mode == 2  # SHADING_MODES: albedo, lambertian, textureless
    colour = batch.colour.masked_fill(textureless, len(cfg.colours))
    return batch.images, batch.primitive, colour


def classify(net: Any, images: Any) -> tuple[Any, Any]:
    import torch

    net.eval()
    with torch.no_grad():
        features = torch.cat([net["trunk"](chunk) for chunk in images.split(256)])
        return net["primitive"](features).argmax(1), net["colour"](features).argmax(1)


def soften(images: Any, generator: Any) -> Any:
    """Exact renders made a little like a small model's samples (edges softer, pixels noisier): a
    Gaussian blur of random width (0 to 1 px) and noise of random level (0 to 0.06) per image.
    Written here because the blur is one depthwise convolution (torchvision is not a dependency)."""
    import torch
    import torch.nn.functional as F

    n = images.shape[0]
    sigma = torch.rand(n, generator=generator) + 1e-3
    offsets = torch.arange(-2, 3, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # (n, 5): one separable kernel per image
    channels = images.shape[1]
    flat = images.reshape(1, n * channels, *images.shape[2:])
    weights = kernel.repeat_interleave(channels, 0)
    flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="replicate"), weights[:, None, None, :], groups=n * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="replicate"), weights[:, None, :, None], groups=n * channels)
    level = 0.06 * torch.rand(n, 1, 1, 1, generator=generator)
    return flat.reshape(images.shape) + level * torch.randn(images.shape, generator=generator)


def train_classifier(cfg: Any, cache: Path, steps: int, log: Any) -> tuple[Any, dict[str, float]]:
    """Train on 8,192 A.2 cameras (seed 1000), test on 1,024 others (seed 2000); cached in `cache`.
    The held-out accuracy is measured on exact renders, per primitive too."""
    import torch
    import torch.nn.functional as F

    from sds_shapes_learned.data import build_bank

    tag = f"{'-'.join(cfg.primitives)}-{'-'.join(cfg.colours)}-{cfg.resolution}px-{steps}"
    path = cache / f"classifier-soft-{tag}.pt"
    net = make_classifier(len(cfg.primitives), len(cfg.colours))
    test_bank = build_bank(replace(cfg, seed=2000), cameras=1024, cache=cache)
    if path.is_file():
        net.load_state_dict(torch.load(path, weights_only=True))
    else:
        torch.manual_seed(0)
        bank = build_bank(replace(cfg, seed=1000), cameras=8192, cache=cache)
        generator = torch.Generator().manual_seed(0)
        optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
        for step in range(steps):
            net.train()
            images, primitive, colour = _labelled(bank, cfg, 64, generator)
            images = soften(images, generator)
            features = net["trunk"](images)
            loss = F.cross_entropy(net["primitive"](features), primitive) + F.cross_entropy(
                net["colour"](features), colour
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if (step + 1) % 200 == 0:
                log(f"classifier step {step + 1}/{steps}: loss {loss.item():.4f}")
        torch.save(net.state_dict(), path)
    images, primitive, colour = _labelled(test_bank, cfg, 4096, torch.Generator().manual_seed(1))
    p, c = classify(net, images)
    accuracy = {
        "primitive": (p == primitive).float().mean().item(),
        "colour": (c == colour).float().mean().item(),
        "both": ((p == primitive) & (c == colour)).float().mean().item(),
    }
    for i, name in enumerate(cfg.primitives):
        accuracy[f"primitive {name}"] = (p[primitive == i] == i).float().mean().item()
    return net, accuracy


def pipeline_class(model: Path) -> str:
    """The pipeline class a folder names in its model_index.json."""
    return str(json.loads((model / "model_index.json").read_text())["_class_name"])


def is_sd3(model: Path) -> bool:
    """Whether the folder is a Stable Diffusion 3 pipeline (`--format sd3`)."""
    return pipeline_class(model) == "StableDiffusion3Pipeline"


def is_stable_diffusion(model: Path) -> bool:
    """Whether the folder is a Stable Diffusion (1.x or 3) pipeline with an autoencoder (else an IF one)."""
    return pipeline_class(model) in ("StableDiffusionPipeline", "StableDiffusion3Pipeline")


def autoencoder_psnr(model: Path, cfg: Any, cache: Path, count: int = 64) -> dict[str, float]:
    """PSNR in dB (mean and worst) of the SD model's autoencoder, its posterior mean decoded, on
    `count` exact renders (random primitive, colour, shading) from 256 A.2 cameras it never saw."""
    import torch
    from diffusers import AutoencoderKL

    from sds_shapes_learned.data import build_bank

    vae = AutoencoderKL.from_pretrained(model / "vae").eval()
    bank = build_bank(replace(cfg, seed=3000), cameras=256, cache=cache)
    images, _, _ = _labelled(bank, cfg, count, torch.Generator().manual_seed(3))
    with torch.no_grad():
        decoded = vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)
    mse = ((decoded - images) / 2).pow(2).flatten(1).mean(1)  # images in [-1, 1]: errors on [0, 1]
    psnr = -10 * torch.log10(mse)
    return {"mean": psnr.mean().item(), "worst": psnr.min().item()}


@functools.cache
def load_pipeline(model: Path) -> Any:
    """The pipeline in `model`, loaded once: IF's with its DDPM scheduler (learned variance), or
    SD's with the DDPM scheduler of its betas (its folder holds PNDM's config), SD3's with its
    flow-matching Euler scheduler and no T5."""
    from diffusers import DDPMScheduler, IFPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline
    from diffusers.utils import logging
    from transformers.utils import logging as transformers_logging

    logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    pipe: Any
    if is_sd3(model):
        pipe = StableDiffusion3Pipeline.from_pretrained(model, text_encoder_3=None, tokenizer_3=None)
    elif is_stable_diffusion(model):
        pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, feature_extractor=None)
        pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    else:
        pipe = IFPipeline.from_pretrained(model, safety_checker=None, watermarker=None, feature_extractor=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample_model(model: Path, prompts: list[str], steps: int, cfg_scale: float, seed: int) -> Any:
    """One sample in [-1, 1] a prompt from the pipeline in `model` (SD's decoded by its autoencoder)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    pipe = load_pipeline(model)
    if is_sd3(model):
        side = pipe.transformer.config.sample_size * pipe.vae_scale_factor
        out = pipe(
            prompts,
            height=side,
            width=side,
            num_inference_steps=steps,
            guidance_scale=cfg_scale,
            generator=generator,
            output_type="pt",
            max_sequence_length=_training_config(model).t5_tokens,  # T5's zero tokens, as trained
        )
        return (out.images * 2 - 1).clamp(-1, 1)
    if is_stable_diffusion(model):
        side = pipe.unet.config.sample_size * pipe.vae_scale_factor
        out = pipe(
            prompts,
            height=side,
            width=side,
            num_inference_steps=steps,
            guidance_scale=cfg_scale,
            generator=generator,
            output_type="pt",
        )
        return (out.images * 2 - 1).clamp(-1, 1)
    out = pipe(
        prompts,
        num_inference_steps=steps,
        guidance_scale=cfg_scale,
        generator=generator,
        output_type="pt",
        clean_caption=False,
    )
    return out.images.clamp(-1, 1)


def learned_backend(model: Path, cfg: Any) -> list[str]:
    """The guidance backend (and its options) that runs the folder as its prior is registered:
    deepfloyd-if; stable-diffusion at the model's side; stable-diffusion-3 at the model's side,
    with T5 dropped (the folder has none) and as many zero T5 tokens as in training."""
    if is_sd3(model):
        return [
            "stable-diffusion-3",
            *("--set", f"guidance.resolution={cfg.resolution}", "--set", "guidance.drop_t5=true"),
            *("--set", f"guidance.max_sequence_length={cfg.t5_tokens}"),
        ]
    if is_stable_diffusion(model):
        return ["stable-diffusion", "--set", f"guidance.resolution={cfg.resolution}"]
    return ["deepfloyd-if"]


def sds_geometry(
    prompt: str, generator: str, guidance: list[str], seed: int, out: Path, extra: list[str]
) -> dict[str, Any]:
    """`sds generate` then `sds eval geometry`: one row (IoU plain and yaw-free, Chamfer, colour error, wall time)."""
    args = ["sds", "generate", prompt, "--generator", generator, *guidance, "--preset", "draft"]
    args += ["--seed", str(seed), "--device", "cpu", "--out", str(out), *extra]
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(args, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - started
    report = out / "geometry.json"
    subprocess.run(["sds", "eval", "geometry", str(out), "--json", str(report)], check=True, capture_output=True)
    row = json.loads(report.read_text())["runs"][0]
    keys = ("iou", "iou_yaw_free", "yaw_degrees", "chamfer", "colour_error")
    return {**{k: row.get(k) for k in keys}, "wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument(
        "--model", type=Path, default=SHIPPED, help="an IF, SD or SD3 pipeline folder (default: the shipped IF one)"
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sds-learned-bench")
    parser.add_argument("--classifier-steps", type=int, default=4000)
    parser.add_argument(
        "--judge-resolution",
        type=int,
        default=32,
        help="the classifier's side; samples of another side are area-resampled to it (the SD model's 64 px to 32)",
    )
    parser.add_argument("--samples", type=int, default=16, help="samples per prompt")
    parser.add_argument("--sampling-steps", type=int, default=50)
    parser.add_argument("--plain", action="store_true", help="sample without the view suffixes")
    parser.add_argument(
        "--cfg", type=float, nargs="*", default=[3.0, 7.0], help="CFG scales of the samples (none: no samples)"
    )
    parser.add_argument(
        "--autoencoder", action="store_true", help="the SD model's autoencoder: PSNR on renders from unseen cameras"
    )
    parser.add_argument("--sds", action="store_true", help="also run SDS on nerf and mesh (minutes per run)")
    parser.add_argument("--generators", nargs="+", default=["nerf", "mesh"])
    harness.add_seeds(parser, (0, 1), nargs="+")
    parser.add_argument("--priors", nargs="+", default=["learned", "exact"], choices=["learned", "exact"])
    parser.add_argument("--jobs", type=int, default=1, help="SDS runs at once (one thread each)")
    parser.add_argument("--sds-objects", nargs="+", default=None, help="default: every primitive, first colour")
    harness.add_sets(parser, help="extra sds generate --set for SDS runs")
    harness.add_outputs(parser, json_help=None)
    args = parser.parse_args(argv)
    harness.parse_sets(args.set)  # checked as sds generate --set checks them, before minutes of work

    import torch

    from sds_core.prompts import VIEWS, view_prompt
    from sds_shapes.world import ShapeObject

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if not (args.model / "model_index.json").is_file():
        print(f"error: {args.model} is not a model folder (no model_index.json)", file=sys.stderr)
        return 2
    if args.autoencoder and not is_stable_diffusion(args.model):
        print(f"error: {args.model} is an IF folder, which has no autoencoder", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    cfg = _training_config(args.model)
    step = json.loads((args.model / "training.json").read_text())["step"]
    args.cache.mkdir(parents=True, exist_ok=True)
    # the judge sees renders at its own side, whatever the model's (one judge for both models)
    judge_cfg = replace(cfg, resolution=args.judge_resolution)
    print(f"model {args.model} (step {step}); world {', '.join(cfg.primitives)} x {', '.join(cfg.colours)}")
    result: dict[str, Any] = {"model": str(args.model), "step": step, "classifier": None, "samples": {}, "sds": []}
    if args.autoencoder:
        result["autoencoder"] = psnr = autoencoder_psnr(args.model, cfg, args.cache)
        print(
            f"autoencoder PSNR (64 renders from 256 unseen A.2 cameras, posterior mean): "
            f"mean {psnr['mean']:.1f} dB, worst {psnr['worst']:.1f} dB"
        )
    if args.cfg:  # the judge is for the samples only (minutes to train when not cached)
        net, accuracy = train_classifier(judge_cfg, args.cache, args.classifier_steps, log)
        result["classifier"] = accuracy
        print(
            f"classifier held-out accuracy (1,024 unseen A.2 cameras, 4,096 renders at {args.judge_resolution} px): "
            "primitive "
            f"{accuracy['primitive']:.3f}, colour {accuracy['colour']:.3f}, both {accuracy['both']:.3f}; per "
            "primitive " + ", ".join(f"{name} {accuracy[f'primitive {name}']:.3f}" for name in cfg.primitives)
        )
    objects = [ShapeObject(p, c) for p in cfg.primitives for c in cfg.colours]
    for scale in args.cfg:
        rows = []
        for i, obj in enumerate(objects):
            # §3.2's view suffixes in turn (90% of the training captions carry one), or the plain prompt
            prompts = [obj.prompt if args.plain else view_prompt(obj.prompt, VIEWS[k % 4]) for k in range(args.samples)]
            images = sample_model(args.model, prompts, args.sampling_steps, scale, seed=i)
            if images.shape[-1] != args.judge_resolution:
                side = (args.judge_resolution, args.judge_resolution)
                images = torch.nn.functional.interpolate(images, side, mode="area")
            p, c = classify(net, images)
            right_p = p == cfg.primitives.index(obj.primitive)
            right_c = c == cfg.colours.index(obj.colour)
            rows.append(
                (
                    obj.prompt,
                    right_p.float().mean().item(),
                    right_c.float().mean().item(),
                    (right_p & right_c).float().mean().item(),
                )
            )
        share = [sum(r[k] for r in rows) / len(rows) for k in (1, 2, 3)]
        print(
            f"samples at CFG {scale} ({args.samples} per prompt{' without' if args.plain else ', with'} view suffixes, "
            f"{args.sampling_steps} {'Euler' if is_sd3(args.model) else 'DDPM'} steps): "
            f"primitive {share[0]:.3f}, colour {share[1]:.3f}, both {share[2]:.3f}"
        )
        for prompt, sp, sc, sb in rows:
            print(f"    {prompt:<22} primitive {sp:.2f} colour {sc:.2f} both {sb:.2f}")
        result["samples"][str(scale)] = {
            "primitive": share[0],
            "colour": share[1],
            "both": share[2],
            "per_prompt": rows,
        }

    if args.sds:
        sds_objects = args.sds_objects or [ShapeObject(p, cfg.colours[0]).prompt for p in cfg.primitives]
        extra = [a for s in args.set for a in ("--set", s)]
        # what `shapes-learned` / `shapes-learned-sd` is: the deepfloyd-if / stable-diffusion backend
        # on the folder, with the backdrop of its training renders declared (SD: renders encoded at
        # the model's side, not the draft preset's 256)
        backend = learned_backend(args.model, cfg)
        priors = {
            "learned": [
                "--guidance",
                *backend,
                "--set",
                f"guidance.model={args.model.resolve()}",
                "--set",
                f"guidance.background={json.dumps(list(cfg.background))}",
            ],
            "exact": ["--guidance", "shapes"],
        }
        jobs = [
            (generator, prompt, seed, prior)
            for generator in args.generators
            for prompt in sds_objects
            for seed in args.seeds
            for prior in args.priors
        ]
        with tempfile.TemporaryDirectory() as tmp:

            def run(job: tuple[str, str, int, str]) -> dict[str, Any]:
                generator, prompt, seed, prior = job
                out = Path(tmp) / f"{generator}-{prior}-{prompt.replace(' ', '-')}-{seed}"
                row = {"generator": generator, "prior": prior, "prompt": prompt, "seed": seed}
                row.update(sds_geometry(prompt, generator, priors[prior], seed, out, extra))
                turned = f" (yaw-free {row['iou_yaw_free']:.3f} at {row['yaw_degrees']:g} deg)"
                print(
                    f"SDS {generator:<5} {prior:<8} {prompt:<16} seed {seed}: IoU {row['iou']:.3f}"
                    f"{turned if row['yaw_degrees'] else ''} Chamfer {row['chamfer']:.4f} colour error "
                    f"{row['colour_error']:.3f} ({row['wall_s']} s)",
                    flush=True,
                )
                return row

            # --jobs runs at once, one CPU thread each (OMP_NUM_THREADS=1 in their environment)
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                result["sds"] = list(pool.map(run, jobs))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.record:
        # SDS alone: a row per run (the docs render them as a table); else one row, the whole result
        # (classifier, samples, autoencoder, SDS runs)
        alone = args.sds and not args.cfg and not args.autoencoder
        rows = [{"model": Path(result["model"]).name, "step": step, **r} for r in result["sds"]] if alone else [result]
        harness.write_record(args.record, rows, "cpu", harness.command(__file__, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
