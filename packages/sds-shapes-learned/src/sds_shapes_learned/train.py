"""Seeded, resumable training of the `shapes-learned` models (`python -m sds_shapes_learned --out DIR`).

Everything the run needs to continue lives in DIR: `state.pt` (UNet, text encoder, EMA,
optimiser, RNG states, step, loss log; written atomically every `checkpoint_minutes` and on
SIGTERM/SIGINT), `losses.json` (the loss log), the traced camera bank, and `export/` (the EMA
weights as an IF pipeline folder, or with `--format sd` a Stable Diffusion one, with `--format sd3`
a Stable Diffusion 3 one, with `--format zero123` a Zero-1-to-3 one, whose frozen autoencoder is
trained first, `vae.pt`, by `sds_shapes_learned.vae`; SD3's transformer learns by rectified flow,
`flow_loss`; Zero-1-to-3's UNet on pairs of views, `pair_loss`). Running the
same command again resumes where the state stops; the data order and noise come from one seeded
generator saved with the state, so a resumed run draws what an uninterrupted one would have drawn.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from sds_core.api import ConfigError, atomic_write, load_plain
from sds_shapes_learned import data, model, sd3_model, sd_model, vae, zero123_model
from sds_shapes_learned.card import model_card, weight_digests
from sds_shapes_learned.config import FORMATS, LATENT_FORMATS, TrainConfig
from sds_shapes_learned.losses import HybridLoss
from sds_shapes_learned.steps import load_progress, logged_step, progress_state

# options that may change between sessions without changing what is trained
RESUMABLE = {"out", "steps", "workers", "checkpoint_minutes", "log_every", "extra"}
# each worker's data stream is seeded apart from the others'
WORKER_SEED_STRIDE = 7919
# the module that builds and saves each format's parts
MODELS = {"if": model, "sd": sd_model, "sd3": sd3_model, "zero123": zero123_model}


class Trainer:
    """The model, its optimiser and EMA, and the data generator: one step at a time."""

    def __init__(self, cfg: TrainConfig, rank: int = 0) -> None:
        from diffusers.training_utils import EMAModel

        self.cfg = cfg
        self.rank = rank
        self.sd = cfg.format == "sd"
        self.flow = cfg.format == "sd3"  # SD3: an MMDiT (`self.unet`) on rectified flow, two CLIPs (`self.encoder`)
        # Zero-1-to-3: a UNet on pairs of views (`self.tokenizer` is CLIP's image processor, `self.encoder`
        # the CLIP vision tower and the camera projection)
        self.pairs = cfg.format == "zero123"
        self.latent = cfg.format in LATENT_FORMATS
        self.angles: torch.Tensor | None = None  # the bank's cameras (`data.bank_cameras`), for the pairs
        # the SD formats' trained autoencoder stage (its frozen model, log, scaling and shift factors)
        self.vae_stage = vae.trained(cfg) if self.latent else None
        self.vae = self.vae_stage.vae if self.vae_stage is not None else None
        torch.manual_seed(cfg.seed)
        self.tokenizer, self.encoder, self.unet, self.scheduler = MODELS[cfg.format].build(cfg)
        if cfg.init:
            zero123_model.initialise(cfg, self.unet)
        self.params = list(self.unet.parameters())
        if cfg.train_text_encoder:
            self.params += list(self.encoder.parameters())
        else:
            self.encoder.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)
        self.ema = EMAModel(self.params, decay=cfg.ema_decay, use_ema_warmup=True)
        self.timesteps = int(self.scheduler.config.num_train_timesteps)
        # IF's learned variance trains on the hybrid objective; SD's fixed variance on the noise MSE
        # alone; SD3 on the velocity MSE (`flow_loss`)
        self.loss = None if self.latent else HybridLoss(self.scheduler.alphas_cumprod, cfg.vlb_weight)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1 + WORKER_SEED_STRIDE * rank)
        if rank:  # dropout differs between workers; the first keeps the stream after the model's
            # initialisation, as the one-worker trainer that made the first stretch of the shipped
            # weights did (re-seeding it changed that stretch: step-50 noise MSE 0.95796, not 0.95841)
            torch.manual_seed(cfg.seed + WORKER_SEED_STRIDE * rank)
        self.step = 0
        self.log: list[dict[str, float]] = []
        self.window: list[dict[str, float]] = []  # losses since the last logged step
        # the worker count of each stretch of training ({"step": first step, "workers": n}), for
        # the model card's commands (the data drawn depends on it)
        self.segments: list[dict[str, int]] = [{"step": 0, "workers": cfg.workers}]
        self.elapsed = 0.0
        self._tokens: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def encode_flow(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """SD3's (text states, pooled) of the captions, tokenised by both CLIP tokenizers as the
        `stable-diffusion-3` backend does (padded to max_length; `sd3_model.encode`)."""
        missing = [c for c in dict.fromkeys(captions) if c not in self._tokens]
        if missing:
            tokens = [
                tok(missing, padding="max_length", max_length=self.cfg.max_length, truncation=True, return_tensors="pt")
                for tok in self.tokenizer
            ]
            for i, c in enumerate(missing):
                self._tokens[c] = (tokens[0].input_ids[i], tokens[1].input_ids[i])
        ids = [torch.stack([self._tokens[c][k] for c in captions]) for k in (0, 1)]
        return sd3_model.encode(self.cfg, self.encoder, ids)

    def flow_loss(self, x0: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """SD3's rectified-flow objective (Esser et al. 2024: §2's flow-matching loss on §3's
        rectified flow, x_t = (1 - t) x + t eps with the velocity target eps - x, uniformly weighted),
        t drawn from the logit-normal distribution (§3.1 "Logit-Normal Sampling", m = logit_mean,
        s = logit_std; §5.1 ranks rf/lognorm(0.00, 1.00) first) by diffusers'
        `compute_density_for_timestep_sampling`; the transformer's timestep is t x 1000, as the
        scheduler and the `stable-diffusion-3` backend give it."""
        from diffusers.training_utils import compute_density_for_timestep_sampling

        cfg = self.cfg
        noise = torch.randn(x0.shape, generator=self.generator)
        t = compute_density_for_timestep_sampling(
            "logit_normal", x0.shape[0], cfg.logit_mean, cfg.logit_std, generator=self.generator
        )
        sigma = t.view(-1, 1, 1, 1)
        x_t = (1 - sigma) * x0 + sigma * noise
        states, pooled = self.encode_flow(captions)
        velocity = self.unet(
            hidden_states=x_t, timestep=t * self.timesteps, encoder_hidden_states=states, pooled_projections=pooled
        ).sample
        return (velocity - (noise - x0)).pow(2).mean()

    def pair_loss(self, bank: data.RenderBank, size: int) -> torch.Tensor:
        """Zero-1-to-3's objective: the noise MSE of the target view's latent, the UNet given the
        reference's latent along channels and the projected image-and-camera token to attend to;
        dropped conditions are zeroed, as the `zero123` backend's unconditional branch is."""
        if self.angles is None:
            self.angles = data.bank_cameras(self.cfg, bank.views.shape[0])
        pairs = data.sample_pairs(bank, self.angles, self.cfg, size, self.generator)
        x0 = self.latents(pairs.images)
        token, reference = zero123_model.condition(self.encoder, self.vae, pairs.references, pairs.cameras)
        keep = (~pairs.dropped).float()
        token, reference = token * keep.view(-1, 1, 1), reference * keep.view(-1, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=self.generator)
        t = torch.randint(0, self.timesteps, (x0.shape[0],), generator=self.generator)
        x_t = self.scheduler.add_noise(x0, noise, t)
        output = self.unet(torch.cat([x_t, reference], dim=1), t, encoder_hidden_states=token).sample
        return (output - noise).pow(2).mean()

    def encode(self, captions: list[str]) -> torch.Tensor:
        """Text states of the captions, tokenised as the backend does (padded to max_length): T5 with
        its attention mask (deepfloyd-if), CLIP without one (stable-diffusion)."""
        missing = [c for c in dict.fromkeys(captions) if c not in self._tokens]
        if missing:
            tokens = self.tokenizer(
                missing, padding="max_length", max_length=self.cfg.max_length, truncation=True, return_tensors="pt"
            )
            for i, c in enumerate(missing):
                self._tokens[c] = (tokens.input_ids[i], tokens.attention_mask[i])
        ids = torch.stack([self._tokens[c][0] for c in captions])
        mask = torch.stack([self._tokens[c][1] for c in captions])
        if self.sd:
            return self.encoder(ids)[0]  # type: ignore[no-any-return]
        return self.encoder(ids, attention_mask=mask)[0]  # type: ignore[no-any-return]

    def train_step(self, bank: data.RenderBank) -> dict[str, float]:
        cfg = self.cfg
        self.unet.train()
        self.encoder.train(cfg.train_text_encoder)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (self.step + 1) / max(1, cfg.warmup_steps))
        share = cfg.batch_size // cfg.workers + (self.rank < cfg.batch_size % cfg.workers)
        if self.pairs:
            mse, vlb = self.pair_loss(bank, share), torch.zeros(())
        else:
            mse, vlb = self._text_loss(bank, share)
        self.optimizer.zero_grad(set_to_none=True)
        # this worker's share of the batch's mean loss, scaled back by the average over workers
        weight = share / cfg.batch_size * cfg.workers  # 1.0 with one worker
        ((mse + vlb) * weight).backward()
        stats = torch.stack([mse.detach(), vlb.detach()])
        if cfg.workers > 1:
            stats = self._average_gradients(stats * weight)
        torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.optimizer.step()
        self.ema.step(self.params)
        self.step += 1
        return {"mse": stats[0].item(), "vlb": stats[1].item()}

    def _text_loss(self, bank: data.RenderBank, share: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mse, vlb) of a batch of captioned images: IF's hybrid objective, SD's noise MSE or
        SD3's velocity MSE."""
        batch = data.sample_batch(bank, self.cfg, share, self.generator)
        x0 = self.latents(batch.images)
        if self.flow:
            mse, vlb = self.flow_loss(x0, batch.captions), torch.zeros(())
        else:
            noise = torch.randn(x0.shape, generator=self.generator)
            t = torch.randint(0, self.timesteps, (x0.shape[0],), generator=self.generator)
            x_t = self.scheduler.add_noise(x0, noise, t)
            states = self.encode(batch.captions)
            output = self.unet(x_t, t, encoder_hidden_states=states).sample
            if self.loss is None:  # SD's fixed variance: the noise MSE alone (LDM's objective)
                mse, vlb = (output - noise).pow(2).mean(), torch.zeros(())
            else:
                mse, vlb = self.loss(output, x0, x_t, noise, t)
        return mse, vlb

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """What the UNet models: the images themselves (IF), or the frozen autoencoder's scaled
        latents of them, drawn from its posterior (SD, as LDM trains; SD3 shifted first, as its
        pipeline encodes: (z - shift_factor) * scaling_factor)."""
        if self.vae is None:
            return images
        posterior = self.vae.encode(images).latent_dist
        if self.flow:
            z = posterior.sample(generator=self.generator)
            return (z - self.vae.config.shift_factor) * self.vae.config.scaling_factor
        return posterior.sample(generator=self.generator) * self.vae.config.scaling_factor

    def _average_gradients(self, stats: torch.Tensor) -> torch.Tensor:
        """Average the workers' gradients (and their weighted loss statistics) in one all-reduce."""
        import torch.distributed as dist

        grads = [p.grad for p in self.params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads] + [stats])
        dist.all_reduce(flat)
        flat /= self.cfg.workers
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        return flat[offset:]

    # --- state -------------------------------------------------------------------------------

    def random_states(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every worker's (data generator, torch RNG) states, in rank order (a collective call)."""
        generator, rng = self.generator.get_state(), torch.get_rng_state()
        if self.cfg.workers == 1:
            return [generator], [rng]
        import torch.distributed as dist

        mine = torch.cat([generator, rng]).to(torch.int32)  # byte tensors travel as int32 under gloo
        every = [torch.empty_like(mine) for _ in range(self.cfg.workers)]
        dist.all_gather(every, mine)
        every = [e.to(torch.uint8) for e in every]
        # clones: a saved slice keeps its whole storage, and the RNGs read a state from its start
        return [e[: generator.numel()].clone() for e in every], [e[generator.numel() :].clone() for e in every]

    def state(self, generators: list[torch.Tensor], rngs: list[torch.Tensor]) -> dict[str, Any]:
        """The whole training state; generators, rngs: every worker's (`random_states`)."""
        return {
            "config": asdict(self.cfg),
            **progress_state(self),
            "unet": self.unet.state_dict(),
            "text_encoder": self.encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict(),
            "generator": generators[0],
            "torch_rng": rngs[0],
            "generators": generators,
            "torch_rngs": rngs,
            "segments": self.segments,
        }

    def load(self, state: dict[str, Any]) -> None:
        check_options(self.cfg, state)
        self.unet.load_state_dict(state["unet"])
        self.encoder.load_state_dict(state["text_encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        generators, rngs = state.get("generators", []), state.get("torch_rngs", [])
        if len(generators) == self.cfg.workers:  # each worker continues its own stream
            self.generator.set_state(generators[self.rank])
            torch.set_rng_state(rngs[self.rank])
        elif self.rank == 0:  # another worker count: the first continues, the others start afresh
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
        load_progress(self, state)
        # states written before segments were recorded were trained by one worker
        self.segments = state.get("segments", [{"step": 0, "workers": 1}])

    def ema_parts(self) -> tuple[Any, Any]:
        """Copies of the UNet and T5 holding the EMA weights."""
        unet, encoder = copy.deepcopy(self.unet), copy.deepcopy(self.encoder)
        params = list(unet.parameters()) + (list(encoder.parameters()) if self.cfg.train_text_encoder else [])
        self.ema.copy_to(params)
        return unet.eval(), encoder.eval()

    def export(self, folder: Path, figures: str = "") -> Path:
        """The EMA weights as an IF (SD, SD3) pipeline folder, replacing `folder` whole (written
        beside it, then renamed); `figures`: Markdown for the model card (`model_card`)."""
        unet, encoder = self.ema_parts()
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        # a fresh tokenizer: the one `encode` has called keeps its padding and truncation settings
        # in tokenizer.json, so an export after training steps would differ in bytes from `--ship`'s
        if self.flow:
            sd3_model.save_folder(tmp, sd3_model.tokenizers(), encoder, unet, self.vae, sd3_model.scheduler(self.cfg))
        elif self.pairs:
            zero123_model.save_folder(tmp, zero123_model.processor(self.cfg), encoder, unet, self.vae)
        elif self.vae is not None:
            sd_model.save_folder(tmp, sd_model.tokenizer(), encoder, unet, self.vae)
        else:
            model.save_folder(tmp, model.tokenizer(), encoder, unet, self.scheduler)
        info = {"step": self.step, "config": asdict(self.cfg), "elapsed_s": round(self.elapsed)}
        (tmp / "training.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        stage = self.vae_stage
        card = model_card(
            self.cfg,
            self.step,
            self.log,
            self.segments,
            figures,
            vae_log=stage.log if stage is not None else None,
            scaling_factor=stage.scaling_factor if stage is not None else None,
            shift_factor=stage.shift_factor if stage is not None else None,
            digests=weight_digests(tmp),
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
        return folder


def save(trainer: Trainer, out: Path) -> None:
    """Write the state, the loss log and the exported folder (a collective call: every worker
    takes part, the first writes)."""
    generators, rngs = trainer.random_states()
    if trainer.rank:
        return
    atomic_write(out / "state.pt", lambda tmp: torch.save(trainer.state(generators, rngs), tmp))
    atomic_write(out / "losses.json", (json.dumps(trainer.log) + "\n").encode())
    trainer.export(out / "export")


def check_options(cfg: TrainConfig, state: dict[str, Any]) -> None:
    """Refuse, in one sentence, options that differ from those the saved state was trained with."""
    saved = {k: v for k, v in state["config"].items() if k not in RESUMABLE}
    ours = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE}
    # options added after a state was written hold their defaults in it
    defaults = asdict(TrainConfig())
    changed = sorted(k for k in ours if json.dumps(ours[k]) != json.dumps(saved.get(k, defaults[k])))
    if changed:
        raise ConfigError(f"the state in {cfg.out} was trained with other options ({', '.join(changed)})")


def saved_state(cfg: TrainConfig) -> dict[str, Any] | None:
    """The training state saved in cfg.out (tensors and plain data only), or None."""
    path = Path(cfg.out) / "state.pt"
    if not path.is_file():
        return None
    return load_plain(path, kind="shapes-learned training state", older="not written by sds_shapes_learned")


def resume(cfg: TrainConfig, rank: int = 0) -> Trainer:
    """A trainer for cfg, at the state saved in cfg.out when there is one."""
    trainer = Trainer(cfg, rank)
    state = saved_state(cfg)
    if state is not None:
        trainer.load(state)
    return trainer


def ship(cfg: TrainConfig, folder: Path, figures: Path | None = None) -> Trainer:
    """Export the EMA weights saved in cfg.out, with their model card, to `folder` (no training);
    `figures`: a Markdown file of measurements on these weights, added to the card."""
    if not (Path(cfg.out) / "state.pt").is_file():
        raise ConfigError(f"{cfg.out} holds no training state (state.pt) to ship")
    text = ""
    if figures is not None:
        try:
            text = figures.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"--figures {figures} is not a readable UTF-8 text file ({error})") from None
    trainer = resume(cfg)
    trainer.export(folder, text)
    return trainer


def train(cfg: TrainConfig, console: Any = None) -> Trainer | None:
    """Train (or resume) to cfg.steps, saving state to cfg.out; returns the trainer at the saved
    state (None when stopped before the SD formats' autoencoder was trained).

    With cfg.workers > 1 the workers are processes of this machine (torch.distributed, gloo)."""
    if cfg.workers < 1 or cfg.workers > cfg.batch_size:
        raise ConfigError(f"workers must be between 1 and the batch size ({cfg.batch_size}), not {cfg.workers}")
    if cfg.format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, not {cfg.format!r}")
    if cfg.init and cfg.format != "zero123":
        raise ConfigError(f"--init starts a zero123 format model from an SD one, not a {cfg.format} one")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.format in LATENT_FORMATS:
        from rich.console import Console

        state = saved_state(cfg)
        if state is not None:  # options that cannot resume are refused before the first stage
            check_options(cfg, state)
        del state
        if not vae.train_vae(cfg, console or Console()):
            return None  # stopped while training the autoencoder (its state is saved)
    if cfg.workers == 1:
        return _train(cfg, 0, console)
    import torch.multiprocessing as mp

    state = saved_state(cfg)
    if state is not None:  # options that cannot resume are refused here, in one sentence
        check_options(cfg, state)
    del state
    data.build_bank(cfg, cache=out)  # traced once, then read by every worker
    rendezvous = Path(tempfile.mkdtemp(prefix="sds-learned-")) / "store"
    context = mp.start_processes(_worker, args=(cfg, str(rendezvous)), nprocs=cfg.workers, join=False)

    def forward(signum: int, frame: Any) -> None:  # a stop asked of this process stops the workers
        for process in context.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not context.join():
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        shutil.rmtree(rendezvous.parent, ignore_errors=True)
    return resume(cfg)


def _worker(rank: int, cfg: TrainConfig, rendezvous: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # one core a worker (more threads per process were slower on 2 cores)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=cfg.workers)
    try:
        _train(cfg, rank, None)
        # the workers leave together: the others wait here while the first writes the state and export
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _agree(flags: list[bool], workers: int) -> list[bool]:
    """Each flag set on any worker (one all-reduce), so that every worker takes the same branch."""
    if workers == 1:
        return flags
    import torch.distributed as dist

    values = torch.tensor([float(f) for f in flags])
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values]


def _train(cfg: TrainConfig, rank: int, console: Any) -> Trainer:
    """One worker's loop; the first logs, shows progress and writes."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    out = Path(cfg.out)
    console = console or Console(quiet=rank > 0)
    trainer = resume(cfg, rank)
    if trainer.step:
        console.log(f"resumed {out / 'state.pt'} at step {trainer.step}")
    if trainer.segments[-1]["workers"] != cfg.workers and trainer.step < cfg.steps:
        trainer.segments.append({"step": trainer.step, "workers": cfg.workers})
    console.log(f"tracing / loading {cfg.cameras} A.2 cameras of {', '.join(cfg.primitives)}")
    bank = data.build_bank(cfg, cache=out)
    unet_size = sum(p.numel() for p in trainer.unet.parameters()) / 1e6
    text_size = sum(p.numel() for p in trainer.encoder.parameters()) / 1e6
    encoder_name = "CLIP L + G" if trainer.flow else "CLIP vision" if trainer.pairs else "CLIP" if trainer.sd else "T5"
    denoiser = "MMDiT" if trainer.flow else "UNet"
    console.log(f"{denoiser} {unet_size:.2f}M parameters, {encoder_name} {text_size:.2f}M, {cfg.workers} worker(s)")

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
    try:
        with Progress(*columns, console=console, disable=rank > 0) as progress:
            task = progress.add_task("train", total=cfg.steps, completed=trainer.step, loss="")
            stopping = False
            while trainer.step < cfg.steps and not stopping:
                entry = logged_step(trainer, bank, cfg.log_every)
                if entry is not None:
                    text = f"mse {entry['mse']:.4f}" + ("" if trainer.latent else f" vlb {entry['vlb']:.4f}")
                    progress.update(task, loss=text)
                    if not console.is_terminal:
                        console.log(f"step {trainer.step}: {text}, {trainer.elapsed / trainer.step:.2f} s/step")
                progress.update(task, completed=trainer.step)
                due = rank == 0 and time.monotonic() - last_save > cfg.checkpoint_minutes * 60
                stopping, due = _agree([stop["now"], due], cfg.workers)
                if due and not stopping:
                    save(trainer, out)
                    last_save = time.monotonic()
        save(trainer, out)
        console.log(f"saved step {trainer.step} to {out}")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return trainer
