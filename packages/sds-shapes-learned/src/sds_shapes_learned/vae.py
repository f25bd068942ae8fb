"""The first stage of the Stable Diffusion format models: their KL autoencoder, trained on the same
renders, then frozen (the latent UNet, or SD3's transformer, is trained on its latents). One stage
for both formats: `--format sd` builds SD 1.5's 4-channel autoencoder (`sd_model.build_vae`),
`--format sd3` SD3's 16-channel one (`sd3_model.build_vae`); the objective, data, state and resume
are the same.

The objective is LDM's for its kl-f8 autoencoder without the terms that need other networks: the
L1 reconstruction summed over an image plus `vae_kl_weight` times the posterior's KL to N(0, I),
both averaged over the batch (its LPIPS term needs a pretrained VGG, its patch GAN a
discriminator: left out, a documented deviation). When training ends, `scaling_factor` is set as
LDM set SD's 0.18215: one over the standard deviation of the latents of a fixed set of renders;
for SD3 also `shift_factor`, their mean, so that (z - shift_factor) * scaling_factor, what SD3's
pipeline and transformer work on, has zero mean and unit variance over those renders (SD3 medium
publishes shift 0.0609 and scale 1.5305 for its autoencoder; diffusers' SD3 pipeline applies them so).
The state (`vae.pt` in the run folder) is written atomically every `checkpoint_minutes`, on
SIGTERM/SIGINT and at the end, so the stage resumes as the UNet's does.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from sds_core.api import ConfigError, atomic_write, load_plain
from sds_shapes_learned import data, sd3_model, sd_model
from sds_shapes_learned.config import TrainConfig
from sds_shapes_learned.steps import load_progress, logged_step, progress_state

STATE = "vae.pt"
SEED_OFFSET = 2  # the stage's data stream: seed + 2 (the UNet stage's is seed + 1)
SCALE_IMAGES = 1024  # renders whose latents set the scaling factor
SCALE_SEED_OFFSET = 3
# options that decide what the autoencoder is; changing any of them needs a new run folder
VAE_OPTIONS = (
    "format",
    "seed",
    "primitives",
    "colours",
    "resolution",
    "cameras",
    "supersample",
    "background",
    "shading_probabilities",
    "vae_channels",
    "vae_steps",
    "vae_batch_size",
    "vae_lr",
    "vae_kl_weight",
)


class VaeTrainer:
    """The autoencoder, its optimiser and the stage's data generator: one step at a time."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.flow = cfg.format == "sd3"
        self.vae = (sd3_model if self.flow else sd_model).build_vae(cfg)
        self.optimizer = torch.optim.AdamW(self.vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(cfg.seed + SEED_OFFSET)
        self.step = 0
        self.elapsed = 0.0
        self.log: list[dict[str, float]] = []
        self.window: list[dict[str, float]] = []  # losses since the last logged step
        self.scaling_factor: float | None = None
        self.shift_factor: float | None = None  # SD3's (the SD format has none)

    def train_step(self, bank: data.RenderBank) -> dict[str, float]:
        self.vae.train()
        x = data.sample_batch(bank, self.cfg, self.cfg.vae_batch_size, self.generator).images
        posterior = self.vae.encode(x).latent_dist
        recon = self.vae.decode(posterior.sample(generator=self.generator)).sample
        l1 = (recon - x).abs().sum(dim=(1, 2, 3)).mean()
        kl = posterior.kl().mean()  # summed over the latent's elements, as LDM's
        loss = l1 + self.cfg.vae_kl_weight * kl
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        pixels = x[0].numel()
        return {"l1": l1.item() / pixels, "kl": kl.item()}

    @torch.no_grad()
    def set_scaling_factor(self, bank: data.RenderBank) -> float:
        """One over the standard deviation of the latents of SCALE_IMAGES fixed renders (LDM's rule);
        for SD3 the shift factor too, their mean."""
        self.vae.eval()
        generator = torch.Generator().manual_seed(self.cfg.seed + SCALE_SEED_OFFSET)
        latents = []
        for start in range(0, SCALE_IMAGES, 64):
            x = data.sample_batch(bank, self.cfg, min(64, SCALE_IMAGES - start), generator).images
            latents.append(self.vae.encode(x).latent_dist.sample(generator=generator))
        self.scaling_factor = float(1.0 / torch.cat(latents).std())
        self.vae.register_to_config(scaling_factor=self.scaling_factor)
        if self.flow:
            self.shift_factor = float(torch.cat(latents).mean())
            self.vae.register_to_config(shift_factor=self.shift_factor)
        return self.scaling_factor

    def state(self) -> dict[str, Any]:
        state = {
            "config": asdict(self.cfg),
            **progress_state(self),
            "vae": self.vae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "scaling_factor": self.scaling_factor,
        }
        if self.flow:
            state["shift_factor"] = self.shift_factor
        return state

    def load(self, state: dict[str, Any]) -> None:
        changed = [k for k in VAE_OPTIONS if json.dumps(state["config"].get(k)) != json.dumps(asdict(self.cfg)[k])]
        if changed:
            options = ", ".join(changed)
            raise ConfigError(f"the autoencoder in {self.cfg.out} was trained with other options ({options})")
        self.vae.load_state_dict(state["vae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        load_progress(self, state)
        self.scaling_factor = state["scaling_factor"]
        if self.scaling_factor is not None:
            self.vae.register_to_config(scaling_factor=self.scaling_factor)
        self.shift_factor = state.get("shift_factor")
        if self.shift_factor is not None:
            self.vae.register_to_config(shift_factor=self.shift_factor)

    @property
    def done(self) -> bool:
        return self.scaling_factor is not None


def saved(cfg: TrainConfig) -> VaeTrainer:
    """The stage at the state saved in cfg.out (fresh when there is none)."""
    trainer = VaeTrainer(cfg)
    path = Path(cfg.out) / STATE
    if path.is_file():
        older = "not written by sds_shapes_learned"
        trainer.load(load_plain(path, kind="shapes-learned autoencoder state", older=older))
    return trainer


def trained(cfg: TrainConfig) -> VaeTrainer:
    """The finished stage of cfg.out, its autoencoder frozen (with its scaling factor); refused if
    the autoencoder is not trained yet. With `cfg.init` (Zero-1-to-3's start from a pretrained
    model) the stage is that folder's autoencoder, untrained here (no steps, no log)."""
    if cfg.init:
        from sds_shapes_learned import zero123_model

        stage = VaeTrainer(cfg)
        stage.vae = zero123_model.initial_vae(cfg)
        stage.scaling_factor = float(stage.vae.config.scaling_factor)
        return stage
    trainer = saved(cfg)
    if not trainer.done:
        raise ConfigError(f"{cfg.out} holds no trained autoencoder ({STATE}): run the training first")
    trainer.vae.eval().requires_grad_(False)
    return trainer


def train_vae(cfg: TrainConfig, console: Any) -> bool:
    """Train (or resume) the autoencoder to cfg.vae_steps and set its scaling factor; False if a
    stop was asked first (the state is saved either way)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if cfg.init:  # the autoencoder of the model the run starts from
        return True
    trainer = saved(cfg)
    if trainer.done:
        return True
    out = Path(cfg.out)
    torch.set_num_threads(max(1, cfg.workers))  # the stage runs in one process, on the workers' cores
    bank = data.build_bank(cfg, cache=out)
    size = sum(p.numel() for p in trainer.vae.parameters()) / 1e6
    console.log(f"autoencoder {size:.2f}M parameters, step {trainer.step} of {cfg.vae_steps}")

    def write() -> None:
        atomic_write(out / STATE, lambda tmp: torch.save(trainer.state(), tmp))

    stop = {"now": False}

    def request_stop(signum: int, frame: Any) -> None:
        stop["now"] = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    last_save = time.monotonic()
    columns = (TextColumn("autoencoder"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("vae", total=cfg.vae_steps, completed=trainer.step)
            while trainer.step < cfg.vae_steps and not stop["now"]:
                entry = logged_step(trainer, bank, cfg.log_every)
                if entry is not None and not console.is_terminal:
                    console.log(f"autoencoder step {trainer.step}: L1 {entry['l1']:.4f} KL {entry['kl']:.1f}")
                progress.update(task, completed=trainer.step)
                if time.monotonic() - last_save > cfg.checkpoint_minutes * 60:
                    write()
                    last_save = time.monotonic()
        if trainer.step >= cfg.vae_steps:
            console.log(f"autoencoder scaling factor {trainer.set_scaling_factor(bank):.5f}")
        write()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return trainer.done
