"""Seeded, resumable training of the `shapes-learned` model (`python -m sds_shapes.learned --out DIR`).

Everything the run needs to continue lives in DIR: `state.pt` (UNet, T5, EMA, optimiser, RNG
states, step, loss log; written atomically every `checkpoint_minutes` and on SIGTERM/SIGINT),
`losses.json` (the loss log), the traced camera bank, and `export/` (the EMA weights as an IF
pipeline folder). Running the same command again resumes where the state stops; the data
order and noise come from one seeded generator saved with the state, so a resumed run draws
what an uninterrupted one would have drawn.
"""

from __future__ import annotations

import copy
import json
import shutil
import signal
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from sds_core.errors import ConfigError
from sds_core.files import atomic_write
from sds_shapes.learned import data, model
from sds_shapes.learned.card import model_card
from sds_shapes.learned.config import TrainConfig
from sds_shapes.learned.losses import HybridLoss

# options that may change between sessions without changing what is trained
RESUMABLE = {"out", "steps", "checkpoint_minutes", "log_every", "extra"}


class Trainer:
    """The model, its optimiser and EMA, and the data generator: one step at a time."""

    def __init__(self, cfg: TrainConfig) -> None:
        from diffusers.training_utils import EMAModel

        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.tokenizer, self.encoder, self.unet, self.scheduler = model.build(cfg)
        self.params = list(self.unet.parameters())
        if cfg.train_text_encoder:
            self.params += list(self.encoder.parameters())
        else:
            self.encoder.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)
        self.ema = EMAModel(self.params, decay=cfg.ema_decay, use_ema_warmup=True)
        self.loss = HybridLoss(self.scheduler.alphas_cumprod, cfg.vlb_weight)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.log: list[dict[str, float]] = []
        self.elapsed = 0.0
        self._tokens: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def encode(self, captions: list[str]) -> torch.Tensor:
        """T5 states of the captions, tokenised as the deepfloyd-if backend does (padded to max_length)."""
        missing = [c for c in dict.fromkeys(captions) if c not in self._tokens]
        if missing:
            tokens = self.tokenizer(
                missing, padding="max_length", max_length=self.cfg.max_length, truncation=True, return_tensors="pt"
            )
            for i, c in enumerate(missing):
                self._tokens[c] = (tokens.input_ids[i], tokens.attention_mask[i])
        ids = torch.stack([self._tokens[c][0] for c in captions])
        mask = torch.stack([self._tokens[c][1] for c in captions])
        return self.encoder(ids, attention_mask=mask)[0]  # type: ignore[no-any-return]

    def train_step(self, bank: data.RenderBank) -> dict[str, float]:
        cfg = self.cfg
        self.unet.train()
        self.encoder.train(cfg.train_text_encoder)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (self.step + 1) / max(1, cfg.warmup_steps))
        batch = data.sample_batch(bank, cfg, cfg.batch_size, self.generator)
        x0 = batch.images
        noise = torch.randn(x0.shape, generator=self.generator)
        t = torch.randint(0, self.loss.steps, (x0.shape[0],), generator=self.generator)
        x_t = self.scheduler.add_noise(x0, noise, t)
        states = self.encode(batch.captions)
        output = self.unet(x_t, t, encoder_hidden_states=states).sample
        mse, vlb = self.loss(output, x0, x_t, noise, t)
        self.optimizer.zero_grad(set_to_none=True)
        (mse + vlb).backward()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.optimizer.step()
        self.ema.step(self.params)
        self.step += 1
        return {"mse": mse.item(), "vlb": vlb.item()}

    # --- state -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg),
            "step": self.step,
            "elapsed": self.elapsed,
            "unet": self.unet.state_dict(),
            "text_encoder": self.encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "log": self.log,
        }

    def load(self, state: dict[str, Any]) -> None:
        saved = {k: v for k, v in state["config"].items() if k not in RESUMABLE}
        ours = {k: v for k, v in asdict(self.cfg).items() if k not in RESUMABLE}
        changed = sorted(k for k in ours if json.dumps(ours[k]) != json.dumps(saved.get(k)))
        if changed:
            raise ConfigError(f"the state in {self.cfg.out} was trained with other options ({', '.join(changed)})")
        self.unet.load_state_dict(state["unet"])
        self.encoder.load_state_dict(state["text_encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.elapsed, self.log = state["step"], state["elapsed"], state["log"]

    def ema_parts(self) -> tuple[Any, Any]:
        """Copies of the UNet and T5 holding the EMA weights."""
        unet, encoder = copy.deepcopy(self.unet), copy.deepcopy(self.encoder)
        params = list(unet.parameters()) + (list(encoder.parameters()) if self.cfg.train_text_encoder else [])
        self.ema.copy_to(params)
        return unet.eval(), encoder.eval()

    def export(self, folder: Path) -> Path:
        """The EMA weights as an IF pipeline folder, replacing `folder` whole (written beside it, then renamed)."""
        unet, encoder = self.ema_parts()
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        model.save_folder(tmp, self.tokenizer, encoder, unet, self.scheduler)
        info = {"step": self.step, "config": asdict(self.cfg), "elapsed_s": round(self.elapsed)}
        (tmp / "training.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(model_card(self.cfg, self.step, self.log), encoding="utf-8")
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
        return folder


def save(trainer: Trainer, out: Path) -> None:
    atomic_write(out / "state.pt", lambda tmp: torch.save(trainer.state(), tmp))
    atomic_write(out / "losses.json", (json.dumps(trainer.log) + "\n").encode())
    trainer.export(out / "export")


def resume(cfg: TrainConfig) -> Trainer:
    """A trainer for cfg, at the state saved in cfg.out when there is one."""
    trainer = Trainer(cfg)
    state = Path(cfg.out) / "state.pt"
    if state.is_file():
        trainer.load(torch.load(state, map_location="cpu", weights_only=False))
    return trainer


def ship(cfg: TrainConfig, folder: Path) -> Trainer:
    """Export the EMA weights saved in cfg.out, with their model card, to `folder` (no training)."""
    if not (Path(cfg.out) / "state.pt").is_file():
        raise ConfigError(f"{cfg.out} holds no training state (state.pt) to ship")
    trainer = resume(cfg)
    trainer.export(folder)
    return trainer


def train(cfg: TrainConfig, console: Any = None) -> Trainer:
    """Train (or resume) to cfg.steps, saving state to cfg.out; returns the trainer."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = console or Console()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer = resume(cfg)
    if trainer.step:
        console.log(f"resumed {out / 'state.pt'} at step {trainer.step}")
    console.log(f"tracing / loading {cfg.cameras} A.2 cameras of {', '.join(cfg.primitives)}")
    bank = data.build_bank(cfg, cache=out)
    unet_size = sum(p.numel() for p in trainer.unet.parameters()) / 1e6
    t5_size = sum(p.numel() for p in trainer.encoder.parameters()) / 1e6
    console.log(f"UNet {unet_size:.2f}M parameters, T5 {t5_size:.2f}M")

    stop = {"now": False}

    def request_stop(signum: int, frame: Any) -> None:
        stop["now"] = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    columns = (
        TextColumn("shapes-learned"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[loss]}"),
    )
    last_save = time.monotonic()
    window: list[dict[str, float]] = []
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("train", total=cfg.steps, completed=trainer.step, loss="")
            while trainer.step < cfg.steps and not stop["now"]:
                start = time.monotonic()
                window.append(trainer.train_step(bank))
                trainer.elapsed += time.monotonic() - start
                if trainer.step % cfg.log_every == 0:
                    entry = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
                    trainer.log.append({"step": trainer.step, **entry, "elapsed_s": round(trainer.elapsed, 1)})
                    window.clear()
                    text = f"mse {entry['mse']:.4f} vlb {entry['vlb']:.4f}"
                    progress.update(task, loss=text)
                    if not console.is_terminal:
                        console.log(f"step {trainer.step}: {text}, {trainer.elapsed / trainer.step:.2f} s/step")
                progress.update(task, completed=trainer.step)
                if time.monotonic() - last_save > cfg.checkpoint_minutes * 60:
                    save(trainer, out)
                    last_save = time.monotonic()
        save(trainer, out)
        console.log(f"saved step {trainer.step} to {out}")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return trainer
