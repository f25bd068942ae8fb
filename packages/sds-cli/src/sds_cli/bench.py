"""`sds bench`'s measurements: a generator's full SDS step against the prior's own cost.

The step is the training loop's own (`Trainer.train_step`: cameras, render, prepare, loss,
regularisers, backward, optimiser), split as the loop times it into render / guidance / backward /
optimiser. The prior's own cost is the floor every SDS step pays (docs/design.md, "GPU and CPU"):
the guidance's noise prediction at the step's batch (both classifier-free branches, without
gradients, as the losses call it) plus, for a latent prior fed RGB renders, the encoder's forward
and backward at the guidance's resolution. Peak memory is CUDA's peak allocated on a GPU and the
process's peak resident set on the CPU (which only grows: read it as an upper bound per row).

Nothing is written into a run folder: the trainer works in a temporary folder and never runs.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STEP_PARTS = ("render", "guidance", "backward", "optimizer")


def _sync(device: Any) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def peak_memory_mb(device: Any) -> float:
    """CUDA: the peak allocated since the last reset; CPU: the process's peak resident set."""
    import torch

    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device)) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _mean_ms(fn: Callable[[], object], device: Any, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = _sync(device)
        fn()
        times.append(_sync(device) - t0)
    return 1000 * statistics.mean(times)


def prior_cost(guidance: Any, conditioning: Any, batch: int, device: Any, steps: int, warmup: int) -> dict[str, float]:
    """Mean ms of the noise prediction (no grad, as SDS calls it) and, for a latent prior, of the
    encoder forward + backward at the guidance's resolution."""
    import torch

    from sds_core.protocols import Render

    side, latent = guidance.resolution, guidance.latent_resolution
    x = torch.randn(batch, guidance.channels, latent, latent, device=device)
    t = torch.full((batch,), guidance.num_train_timesteps // 2, device=device, dtype=torch.long)

    def predict() -> None:
        with torch.no_grad():
            guidance.predict_noise(x, t, conditioning)

    def encode() -> None:
        pixels = torch.rand(batch, 3, side, side, device=device, requires_grad=True)
        latents = guidance.prepare(Render(image=pixels))
        latents.backward(torch.ones_like(latents))

    parts: dict[str, Callable[[], None]] = {"unet_pair": predict}
    if guidance.space == "latent":
        parts["vae_encoder"] = encode
    return {name: _mean_ms(fn, device, steps, warmup) for name, fn in parts.items()}


def shared_guidance(resolved: Any, cache: dict[str, Any]) -> Any:
    """The guidance spec with a factory that returns one guidance for every generator of a bench
    (built, and compiled, once)."""
    spec = resolved.specs["guidance"]

    def factory(config: Any, context: Any) -> Any:
        if "guidance" not in cache:
            cache["guidance"] = spec.build(config, context)
        return cache["guidance"]

    return dataclasses.replace(spec, factory=factory)


@dataclasses.dataclass
class BenchCase:
    """One row of a bench: a label, the generator plugin and the config it runs with."""

    label: str
    generator: str
    overrides: dict[str, Any]


def measure(
    case: BenchCase,
    *,
    guidance: str,
    preset: str,
    prompt: str,
    device: Any,
    steps: int,
    warmup: int,
    start_step: int,
    catalog: Any,
    cache: dict[str, Any],
    loss: str | None = None,
) -> dict[str, Any]:
    """The measured row of one case (ms are means over `steps` after `warmup` untimed steps)."""
    import torch

    from sds_core.loop import Trainer
    from sds_core.resolve import resolve_config

    names = {"generator": case.generator, "guidance": guidance, "loss": loss or "sds"}
    resolved = resolve_config(catalog, preset=preset, overrides=case.overrides, names=names)
    preset_steps = resolved.run.steps
    resolved.specs["guidance"] = shared_guidance(resolved, cache)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix="sds-bench-") as tmp:
        built = _sync(device)
        trainer = Trainer(resolved, prompt, Path(tmp) / "run", device)
        trainer.step = min(start_step, max(preset_steps - steps - warmup, 0))  # shaded renders, as most of a run
        for _ in range(warmup):
            trainer.train_step()
        warm = _sync(device) - built
        events = [trainer.train_step() for _ in range(steps)]
        parts = {name: 1000 * statistics.mean(e.timings[name] for e in events) for name in STEP_PARTS}
        step_ms = sum(parts.values())
        cams = trainer.cameras.sample().to(device)
        with torch.no_grad():
            render = trainer.generator.render(cams, trainer.step)
        view_dependent = trainer.generator.view_dependent
        conditioning = trainer.guidance.condition(render, cams if view_dependent else None)
        del render
        prior = prior_cost(trainer.guidance, conditioning, cams.batch_size, device, steps, warmup)
        prior_ms = sum(prior.values())
        g = trainer.guidance
        row: dict[str, Any] = {
            "generator": case.label,
            "plugin": case.generator,
            "guidance": guidance,
            "loss": names["loss"],
            "preset": preset,
            "device": device.type,
            "dtype": str(getattr(g, "dtype", torch.float32)).removeprefix("torch."),
            "render_side": resolved.cameras.width,
            "batch": cams.batch_size,
            "guidance_resolution": g.resolution,
            "steps_timed": steps,
            "warmup_s": warm,
            "step_ms": step_ms,
            **{f"step_{k}_ms": v for k, v in parts.items()},
            "prior_ms": prior_ms,
            **{f"prior_{k}_ms": v for k, v in prior.items()},
            "ratio": step_ms / prior_ms,
            "peak_mb": peak_memory_mb(device),
            "preset_steps": preset_steps,
            "projected_preset_min": step_ms * preset_steps / 60_000,
            "projected_10k_min": step_ms * 10_000 / 60_000,
        }
        del trainer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _first_line(*command: str) -> str | None:
    """The first line a tool prints (`git rev-parse HEAD`, `nvidia-smi ...`), None when it is
    missing, fails or prints nothing."""
    tool = shutil.which(command[0])
    if tool is None:
        return None
    try:
        done = subprocess.run([tool, *command[1:]], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0] if done.returncode == 0 and lines else None


def environment(device: Any) -> dict[str, Any]:
    """What a stored result says about where it was measured."""
    import torch

    cuda = device.type == "cuda"
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": _first_line("git", "rev-parse", "HEAD"),  # the checkout benchmarks run from
        "machine": {
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "driver": _first_line("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader") if cuda else None,
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})",
    }


def record(command: list[str], device: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A stored benchmark result: the command, where and when it ran, and its rows."""
    return {"command": command, **environment(device), "rows": rows}
