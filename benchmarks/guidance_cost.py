"""Guidance cost per SDS step: the floor that every SDS run pays (docs/design.md, "GPU and CPU").

One step = the UNet at batch 2 (classifier-free guidance: conditional + unconditional), plus for
a latent model fed RGB renders the VAE encoder forward and backward at 512 px. The models are
built from their published configs (tests/fixtures/configs) with random weights (no download):
the cost does not depend on the weights. On CPU in float32; on CUDA (when present) in float16, plus DeepFloyd IF-I-XL.

    python benchmarks/guidance_cost.py                 # CPU, SD 1.5 and 2.1, one timed step
    python benchmarks/guidance_cost.py --steps 5 --warmup 1 --device cuda
    python benchmarks/guidance_cost.py --device cuda --dtype float16 --models sd21 --steps 10 --warmup 3
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness

# The published configs, with their sources, are the test fixtures' (tests/fixtures/configs/*.json);
# IF-I-XL's UNet config is a saved copy of its diffusers config (that file's `_source`): 4.30B parameters.
CONFIGS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "configs"


def published(name: str, component: str) -> dict[str, Any]:
    """A component's published config (keys starting with "_" are notes, not fields)."""
    config = json.loads((CONFIGS / f"{name}.json").read_text(encoding="utf-8"))[component]
    return {k: v for k, v in config.items() if not k.startswith("_")}


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# name: (label, published config, text states (tokens, width), fed RGB through the VAE)
MODELS: dict[str, tuple[str, str, tuple[int, int], bool]] = {
    "sd15": ("SD 1.5", "sd15", (77, 768), True),
    "sd21": ("SD 2.1-base", "sd21-base", (77, 1024), True),
    "if": ("IF-I-XL", "if-i-xl", (77, 4096), False),
}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux: whole process


def sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def sds_step_cost(
    name: str, config: str, text: tuple[int, int], latent: bool, device: torch.device, args: Any
) -> dict[str, Any]:
    """Print, and return as a row, the mean cost of one SDS step of the model `name`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.utils import logging

    logging.set_verbosity_error()  # random weights cast with .to(): nothing to warn about

    dtype = args.torch_dtype
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with device:  # random weights made where they run (a CPU init of 865M parameters takes a while)
        unet = UNet2DConditionModel.from_config(published(config, "unet"))
        unet = unet.to(device, dtype).eval().requires_grad_(False)
        vae = AutoencoderKL.from_config(published(config, "vae")) if latent else None
        vae = vae.to(device, dtype).eval().requires_grad_(False) if vae is not None else None
    # attention: diffusers' defaults, SDPA of each layer's kind (IF's layers add keys and values)
    if device.type == "cuda":
        unet.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    side = unet.config.sample_size
    states = torch.randn(2, *text, device=device, dtype=dtype)

    def step(unet: Any, vae: Any) -> tuple[float, float]:
        t0 = sync(device)
        if vae is not None:
            rgb = torch.rand(1, 3, args.resolution, args.resolution, device=device, dtype=dtype, requires_grad=True)
            x = vae.encode(rgb * 2 - 1).latent_dist.sample() * 0.18215
        else:
            x = torch.rand(1, 3, side, side, device=device, dtype=dtype, requires_grad=True) * 2 - 1
        t1 = sync(device)
        with torch.no_grad():
            x_t = x.detach().repeat(2, 1, 1, 1)
            t = torch.full((2,), 500, device=device)
            eps = unet(x_t, t, encoder_hidden_states=states).sample[:, : x.shape[1]]
            grad = eps[1:] + 8.0 * (eps[:1] - eps[1:])
        t2 = sync(device)
        x.backward(grad)
        t3 = sync(device)
        return t2 - t1, (t1 - t0) + (t3 - t2)

    for _ in range(args.warmup):
        step(unet, vae)
    unet_s, vae_s = [], []
    for _ in range(args.steps):
        u, v = step(unet, vae)
        unet_s.append(u)
        vae_s.append(v)
    unet_ms = 1000 * sum(unet_s) / len(unet_s)
    vae_ms = 1000 * sum(vae_s) / len(vae_s)
    peak = peak_memory_mb(device)
    print(
        f"{name:<10} {device.type:<4} {str(dtype).removeprefix('torch.'):<8} UNet {params:7.0f}M  "
        f"UNet@b2 {unet_ms:9.1f} ms  VAE enc fwd+bwd {vae_ms:9.1f} ms  step {unet_ms + vae_ms:9.1f} ms "
        f"({(unet_ms + vae_ms) / 1000:.4f} s/step, mean of {args.steps})  "
        f"peak {peak:8.0f} MB" + (" (process RSS)" if device.type == "cpu" else "")
    )
    return {
        "model": name,
        "device": device.type,
        "dtype": str(dtype).removeprefix("torch."),
        "unet_params_m": params,
        "resolution": args.resolution,
        "steps_timed": args.steps,
        "unet_pair_ms": unet_ms,
        "vae_encoder_ms": vae_ms,
        "step_ms": unet_ms + vae_ms,
        "peak_mb": peak,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_device(parser, "auto", help="auto, cpu or cuda")
    parser.add_argument("--steps", type=int, default=1, help="timed steps (averaged)")
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=512, help="RGB side fed to the VAE")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", *sorted(DTYPES)], help="auto: float16 on CUDA, float32 on CPU"
    )
    parser.add_argument(
        "--models", nargs="+", choices=sorted(MODELS), default=None, help="default: sd15 sd21, and if on CUDA"
    )
    harness.add_outputs(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if args.dtype == "auto":
        args.torch_dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        args.torch_dtype = DTYPES[args.dtype]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, resolution {args.resolution}")
    if device.type == "cuda":
        print(f"device {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}")
    names = args.models or ["sd15", "sd21", *(["if"] if device.type == "cuda" else [])]
    runs = [MODELS[n] for n in names]
    rows = []
    for name, config, text, latent in runs:
        rows.append(sds_step_cost(name, config, text, latent, device, args))
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    harness.write_outputs(args, rows, device, __file__, argv)
    return rows


if __name__ == "__main__":
    main()
