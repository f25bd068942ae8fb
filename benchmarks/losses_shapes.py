"""The loss axis on the `shapes` world (CPU): every loss of the SDS family against the ground truth.

For each loss (sds, csd, nfsd, ism, sjc, vsd) and seed, two runs with the exact `shapes` prior:
- the `image` generator (draft preset): PSNR of the final image to the nearest true reference view;
- the `nerf` generator (draft preset): IoU, Chamfer distance and colour error against the true
  object (sds_shapes.metrics, at the density level mesh export uses, as nerf_shapes.py);
plus seconds per step, prior calls (`predict_noise`) per step, and for VSD eps_phi's trainable
parameters. Each run is a fresh process, so its peak RSS is its own. `--guidance shapes-learned`
runs the same comparison on the learned prior (nerf only: the image PSNR needs the exact prior's
reference views; the truth comes from the prompt), with `--set` for the settings its README names.
With --sd-memory it also counts what VSD's LoRA copy costs on Stable Diffusion 2.1's UNet
(published architecture, built on the meta device: no weights, no memory).

    OMP_NUM_THREADS=1 python benchmarks/losses_shapes.py                      # the README table
    OMP_NUM_THREADS=1 python benchmarks/losses_shapes.py --guidance shapes-learned --generators nerf \
        --seeds 0 --jobs 2 --set generator.blob=magic3d --set optim.schedule=warmup_cosine \
        --set optim.warmup_steps=0 --set optim.lr_final=5e-4                 # its README table
    python benchmarks/losses_shapes.py --losses sds vsd --seeds 0 --nerf-steps 300 --image-steps 100
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness

LOSSES = ("sds", "csd", "nfsd", "ism", "sjc", "vsd")


def _counting(guidance: Any) -> list[int]:
    """Count the guidance's predict_noise calls (an instance attribute over the method)."""
    calls = [0]
    predict = guidance.predict_noise

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return predict(*args, **kwargs)

    guidance.predict_noise = counted
    return calls


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One run in this process; returns one result row."""
    import torch

    from sds_core.config import deep_merge
    from sds_core.lifecycle import start_run

    torch.set_num_threads(1)
    generator, loss, seed, steps = job["generator"], job["loss"], job["seed"], job["steps"]
    overrides: dict[str, Any] = {"run": {"seed": seed, "steps": steps, "preview_every": 0, "checkpoint_every": 0}}
    if generator == "nerf":
        overrides = deep_merge(overrides, {"generator": {"export_formats": ["ply"]}})
    overrides = deep_merge(overrides, job["overrides"])
    names = {"generator": generator, "guidance": job["guidance"], "loss": loss}
    out = Path(job["out"])
    trainer = start_run(job["prompt"], out, preset="draft", overrides=overrides, names=names, device="cpu")
    calls = _counting(trainer.guidance)
    started = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    per_step = [r["time_render"] + r["time_guidance"] + r["time_backward"] + r["time_optimizer"] for r in records]
    row: dict[str, Any] = {
        "generator": generator,
        "loss": loss,
        "seed": seed,
        "steps": trainer.step,
        "s_per_step": statistics.mean(per_step),
        "calls_per_step": calls[0] / trainer.step,
        "wall_s": wall,
        "phi_params": sum(p.numel() for p in trainer.loss.phi.parameters()) if hasattr(trainer.loss, "phi") else 0,
    }
    if generator == "image":
        image = trainer.generator.image().detach()
        refs = trainer.guidance.reference_images("albedo")
        mse = (refs - image).pow(2).flatten(1).mean(1)
        row["psnr"] = float(-10 * torch.log10(mse.min()))
    else:
        from sds_shapes.metrics import evaluate
        from sds_shapes.world import parse_prompt

        density, albedo, level = trainer.generator.density_field()
        trainer.generator.eval()
        metrics = evaluate(density, parse_prompt(job["prompt"]).obj, albedo, threshold=level)
        row.update(iou=metrics["iou"], chamfer=metrics["chamfer"], colour_error=metrics.get("colour_error"))
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def sd_lora_cost(rank: int) -> dict[str, float]:
    """Parameters of VSD's eps_phi on SD 2.1's UNet: the copy, its LoRA adapters and camera embedding."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from diffusers.models.embeddings import TimestepEmbedding
    from peft import LoraConfig

    with init_empty_weights():  # stabilityai/stable-diffusion-2-1-base unet/config.json, shapes only
        unet = UNet2DConditionModel(
            sample_size=64,
            cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20),
            use_linear_projection=True,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
        )
        base = sum(p.numel() for p in unet.parameters())
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        lora = sum(p.numel() for p in unet.parameters() if p.requires_grad)
        camera = sum(p.numel() for p in TimestepEmbedding(16, unet.time_embedding.linear_2.out_features).parameters())
    return {"unet_copy": base, "lora": lora, "camera": camera}


def table(rows: list[dict[str, Any]], losses: list[str]) -> str:
    def mean(loss: str, generator: str, key: str) -> str:
        values = [r[key] for r in rows if r["loss"] == loss and r["generator"] == generator and r.get(key) is not None]
        if not values:
            return "-"
        m = statistics.mean(values)
        spread = f" ±{statistics.pstdev(values):.2g}" if len(values) > 1 else ""
        return f"{m:.3g}{spread}"

    head = (
        "| loss | image PSNR dB | image s/step | image calls/step | nerf IoU | nerf Chamfer | nerf colour err "
        "| nerf s/step | nerf calls/step | eps_phi params | peak RSS MB |"
    )
    lines = [head, "|" + " --- |" * 11]
    for loss in losses:
        rss = max((r["peak_rss_mb"] for r in rows if r["loss"] == loss), default=float("nan"))
        phi = max((r["phi_params"] for r in rows if r["loss"] == loss), default=0)
        cells = [
            mean(loss, "image", "psnr"),
            mean(loss, "image", "s_per_step"),
            mean(loss, "image", "calls_per_step"),
            mean(loss, "nerf", "iou"),
            mean(loss, "nerf", "chamfer"),
            mean(loss, "nerf", "colour_error"),
            mean(loss, "nerf", "s_per_step"),
            mean(loss, "nerf", "calls_per_step"),
            str(phi) if phi else "-",
            f"{rss:.0f}",
        ]
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--losses", nargs="+", default=list(LOSSES))
    harness.add_seeds(parser, (0, 1), nargs="+")
    parser.add_argument("--prompt", default="a red cube")
    parser.add_argument("--image-steps", type=int, default=300, help="the image draft preset's 300")
    parser.add_argument("--nerf-steps", type=int, default=1500, help="the nerf draft preset's 1,500")
    parser.add_argument("--generators", nargs="+", default=["image", "nerf"])
    parser.add_argument("--sd-memory", action="store_true", help="also count VSD's LoRA copy on SD 2.1's UNet")
    parser.add_argument("--guidance", default="shapes", help="shapes (exact) or shapes-learned (nerf only)")
    harness.add_sets(parser, help="a config override key.path=value, every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one thread each)")
    harness.add_outputs(parser, json_help=None)
    args = parser.parse_args(argv)
    if args.guidance != "shapes" and "image" in args.generators:
        parser.error("the image PSNR needs the exact prior's reference views: use --generators nerf")

    overrides = harness.parse_sets(args.set)

    steps = {"image": args.image_steps, "nerf": args.nerf_steps}
    rows: list[dict[str, Any]] = []
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="losses-shapes-") as tmp:
        jobs = [
            {"generator": g, "loss": loss, "seed": seed, "steps": steps[g], "prompt": args.prompt}
            | {"guidance": args.guidance, "overrides": overrides}
            for g in args.generators
            for loss in args.losses
            for seed in args.seeds
        ]
        for i, job in enumerate(jobs):
            job["out"] = str(Path(tmp) / f"{i:03d}-{job['generator']}-{job['loss']}-{job['seed']}")
        # a fresh process per run (maxtasksperchild=1): its own peak RSS
        with context.Pool(args.jobs, maxtasksperchild=1) as pool:
            for row in pool.imap(run_one, jobs):
                rows.append(row)
                print(json.dumps(row), flush=True)
    sets = f" {' '.join(args.set)};" if args.set else ""
    print(
        f"\n{args.prompt!r}, {args.guidance} prior, draft presets,{sets} CPU 1 thread a run, {args.jobs} at once, "
        f"seeds {args.seeds}; mean ±std over seeds"
    )
    print(table(rows, args.losses))
    if args.sd_memory:
        cost = sd_lora_cost(4)
        print(
            f"\nVSD eps_phi on SD 2.1 (rank 4): a UNet copy of {cost['unet_copy'] / 1e6:.1f}M parameters "
            f"({cost['unet_copy'] * 2 / 2**30:.2f} GiB in float16), of which {cost['lora'] / 1e6:.2f}M LoRA + "
            f"{cost['camera'] / 1e6:.2f}M camera embedding train (float32, with Adam's two moments: "
            f"{(cost['lora'] + cost['camera']) * 12 / 2**20:.0f} MiB)"
        )
    harness.write_outputs(args, rows, "cpu", __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
