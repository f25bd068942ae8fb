"""The optimisation loop: cameras -> render -> guidance -> loss -> step, with a run folder.

It is seeded, writes metrics.jsonl, preview grids and atomic checkpoints, resumes bit for bit on
CPU, and on SIGINT or SIGTERM finishes the current step, writes a checkpoint and stops; a signal
while the final checkpoint or final/ is being written stops at once (final/ is then absent, and
`sds resume` writes it). A write that fails (disk full) is one sentence saying what is intact.
Starting, resuming and loading a run folder are `sds_core.lifecycle`'s.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from sds_core.cameras import CameraSampler
from sds_core.checkpoint import (
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from sds_core.errors import ConfigError, RunInterrupted, SdsError
from sds_core.events import ArtifactWritten, Event, Listener, RunFinished, RunStarted, StepFinished
from sds_core.files import RunLock, WriteFailed, write_failure
from sds_core.imaging import grid, save_image
from sds_core.protocols import (
    AdaptiveParameters,
    BuildContext,
    ExportContext,
    GuidanceFacts,
    ScheduledLearningRates,
    TrainableLoss,
)
from sds_core.reference import ReferenceImage
from sds_core.reference_terms import attach_reference
from sds_core.resolve import ResolvedConfig
from sds_core.run import RunFolder
from sds_core.schedules import learning_rate_factor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for but torch sees no CUDA device; use --device cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N")
    return torch.device(name)


class _StopNow(BaseException):
    """Raised by the signal handler while the final checkpoint and final/ are written (a
    BaseException: an exporter's `except Exception` must not swallow it)."""


class _StopFlag:
    """Set by SIGINT / SIGTERM; a second signal stops at once, and so does the first one once
    `urgent` is set (the final phase, whose work `sds resume` redoes)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.urgent = False

    def __bool__(self) -> bool:
        return self.signal is not None


@contextmanager
def _graceful_signals() -> Iterator[_StopFlag]:
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.signal is not None:
            raise KeyboardInterrupt
        flag.signal = signum
        if flag.urgent:
            raise _StopNow

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def stop_at_once(interrupted: Callable[[], RunInterrupted]) -> Iterator[None]:
    """SIGINT / SIGTERM stop the block at once, raising `interrupted()` (made when the signal
    comes, so it can say what is intact then), for work that is redone whole: the final
    checkpoint, an export into a staged final/."""
    with _graceful_signals() as flag:
        flag.urgent = True
        try:
            yield
        except _StopNow:
            raise interrupted() from None


def _versions(resolved: ResolvedConfig) -> dict[str, str]:
    out = {}
    for package in ("sds-core", "torch", *sorted({s.provider for s in resolved.specs.values()})):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out


def _optimizer(resolved: ResolvedConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    cfg = resolved.optim
    for group in groups:
        # a group's own "lr" is absolute; "lr_scale" multiplies optim.lr (a generator's ratio of
        # learning rates, e.g. the mesh's colours to its vertices, without reading the optim section)
        scale = group.pop("lr_scale", None)
        group.setdefault("lr", cfg.lr if scale is None else cfg.lr * scale)
        group["base_lr"] = group["lr"]
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class Trainer:
    """One run: builds the components from a resolved config and optimises."""

    resolved: ResolvedConfig
    prompt: str
    out_dir: Path
    device: torch.device
    listeners: Sequence[Listener] = field(default_factory=list)
    lock: RunLock | None = None  # the run folder's lock, held while this trainer may write there
    # image-to-3D (`sds generate --image`): the reference image, and the path it was read from
    reference: ReferenceImage | None = None
    image_source: str | None = None

    def __post_init__(self) -> None:
        self.folder = RunFolder(Path(self.out_dir))
        self.total_steps = self.resolved.run.steps
        seed_everything(self.resolved.run.seed)
        context = BuildContext(
            device=self.device, prompt=self.prompt, total_steps=self.total_steps, config=self.resolved.tree
        )
        specs, configs = self.resolved.specs, self.resolved.plugin_configs
        self.guidance = specs["guidance"].build(configs["guidance"], context)
        context.guidance, context.facts = self.guidance, GuidanceFacts.of(self.guidance)
        self.generator = specs["generator"].build(configs["generator"], context).to(self.device)
        self.loss = specs["loss"].build(configs["loss"], context)
        self.cameras = CameraSampler(self.resolved.cameras)
        # the reference-view terms of an image-conditioned guidance (None for a text-only run)
        self.reference_terms = attach_reference(
            self.resolved, self.guidance, self.generator, self.reference, self.device
        )
        groups = self.generator.param_groups()
        if isinstance(self.loss, TrainableLoss):  # e.g. VSD's eps_phi, with its own lr
            groups += self.loss.param_groups()
        self.optimizer = _optimizer(self.resolved, groups)
        self.step = 0
        self.saved_step: int | None = None  # the step of the checkpoint on disk, if any

    # --- events ---------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)

    # --- state ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "generator": self.generator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(),
            "prompt": self.prompt,
            "preset": self.resolved.preset,
            "config": self.resolved.tree,
            # what the generator read from the guidance: `load_run` builds it without the model
            "guidance": asdict(GuidanceFacts.of(self.guidance)),
            **({"loss": self.loss.state_dict()} if isinstance(self.loss, TrainableLoss) else {}),
            **({"image": self.reference.record(self.image_source)} if self.reference is not None else {}),
        }

    def load_state(self, payload: dict[str, Any]) -> None:
        self.generator.load_state_dict(payload["generator"])
        if isinstance(self.loss, TrainableLoss):
            self.loss.load_state_dict(payload["loss"])
        self.optimizer.load_state_dict(payload["optimizer"])
        set_rng_state(payload["rng"])
        self.step = self.saved_step = int(payload["step"])

    def save_checkpoint(self) -> Path:
        state = self.state()
        root = self.folder.root
        path = save_checkpoint(self.folder.last_checkpoint, state, root=root)
        self.saved_step = self.step
        keep = self.resolved.run.keep_every
        if keep and self.step % keep == 0:
            save_checkpoint(self.folder.step_checkpoint(self.step), state, root=root)
        self.emit(ArtifactWritten("checkpoint", path, self.step))
        return path

    def _interrupted_final(self) -> RunInterrupted:
        detail = f"interrupted while writing {self.folder.final.name}/; {self.intact()}"
        return RunInterrupted(self.saved_step or 0, str(self.folder.last_checkpoint), detail)

    def intact(self) -> str:
        """What a failed or interrupted write leaves to resume from."""
        if self.saved_step is None:
            return "no checkpoint was written yet"
        return f"the checkpoint of step {self.saved_step} is intact"

    def write_config(self) -> None:
        if self.reference is not None:  # the input image is kept beside the config that names it
            self.reference.write(self.folder.root)
        self.folder.write_config(
            {
                "prompt": self.prompt,
                "seed": self.resolved.run.seed,
                "preset": self.resolved.preset,
                "device": str(self.device),
                "config": self.resolved.tree,
                "plugins": {
                    section: {"name": spec.name, "provider": spec.provider, "version": spec.version}
                    for section, spec in self.resolved.specs.items()
                },
                "versions": _versions(self.resolved),
                **({"image": self.reference.record(self.image_source)} if self.reference is not None else {}),
            }
        )

    # --- the loop -------------------------------------------------------------------------

    def _set_lr(self) -> float:
        cfg = self.resolved.optim
        lr = 0.0
        scheduled = self.generator if isinstance(self.generator, ScheduledLearningRates) else None
        for group in self.optimizer.param_groups:
            own = scheduled.learning_rate(group.get("name", ""), self.step) if scheduled is not None else None
            if own is not None:  # the generator's own schedule of this group (the Gaussians' means)
                group["base_lr"] = own
            factor = learning_rate_factor(
                self.step, self.total_steps, group["base_lr"], cfg.schedule, cfg.warmup_steps, cfg.lr_init, cfg.lr_final
            )
            group["lr"] = group["base_lr"] * factor
            lr = max(lr, group["lr"])
        return lr

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def train_step(self) -> StepFinished:
        lr = self._set_lr()
        t0 = self._sync()
        cams = self.cameras.sample().to(self.device)
        render = self.generator.render(cams, self.step)
        t1 = self._sync()
        x = self.guidance.prepare(render)
        views = cams if self.generator.view_dependent else None
        conditioning = self.guidance.condition(render, views)
        out = self.loss(x, self.guidance, conditioning, self.step, cameras=views)
        regs = self.generator.regularizers(render, cams, self.step)
        loss = out.loss
        if self.reference_terms is not None:  # image-to-3D: the prior's weight, and the reference view's terms
            loss = self.reference_terms.options.lambda_sds * loss
            regs = {**regs, **self.reference_terms(self.generator, self.step)}
        total = loss + sum(regs.values(), torch.zeros((), device=out.loss.device))
        t2 = self._sync()
        self.optimizer.zero_grad(set_to_none=True)
        if total.requires_grad:  # a render that reached no parameter (e.g. an emptied field) skips its update
            total.backward()
        t3 = self._sync()
        self.optimizer.step()
        if isinstance(self.generator, AdaptiveParameters):  # e.g. Gaussians densified on a schedule
            self.generator.after_step(self.optimizer, self.step)
        t4 = self._sync()
        self.step += 1
        terms = dict(out.terms)
        terms.update({name: float(value.detach()) for name, value in regs.items()})
        # generators may report scalars of their own (e.g. samples per ray) in render.aux["log"]
        terms.update({name: float(value) for name, value in render.aux.get("log", {}).items()})
        timings = {"render": t1 - t0, "guidance": t2 - t1, "backward": t3 - t2, "optimizer": t4 - t3}
        return StepFinished(self.step, self.total_steps, float(total.detach()), terms, out.t, lr, timings, 0.0)

    def write_preview(self) -> Path:
        cfg = self.resolved.run
        cams = self.cameras.orbit(cfg.preview_views, elevation=15.0).to(self.device)
        with torch.no_grad():
            images = self.generator.preview(cams, self.step)
            if images.shape[1] != 3:
                images = self.guidance.decode(images)
        path = self.folder.previews / f"step-{self.step:06d}.png"
        save_image(grid(images), path, root=self.folder.root)
        self.emit(ArtifactWritten("preview", path, self.step))
        return path

    def export(
        self, formats: tuple[str, ...] | None = None, resolution: int | None = None, threshold: float | None = None
    ) -> list[Path]:
        """Write the generator's final artefacts into final/ (all formats unless `formats`)."""
        context = ExportContext(
            self.cameras, self.prompt, self.device, formats, resolution, threshold, self.guidance.decode
        )
        outputs = export_final(self.generator, self.folder, context, self.step)
        for path in outputs:
            self.emit(ArtifactWritten("final", path, self.step))
        return outputs

    def run(self) -> list[Path]:
        """Train from self.step to the end; returns the final artefacts. The run folder's lock is
        released when the run ends, however it ends."""
        try:
            return self._train()
        finally:
            if self.lock is not None:
                self.lock.release()

    def _train(self) -> list[Path]:
        self.folder.check_layout()
        try:
            return self._train_steps()
        except WriteFailed as exc:
            root = self.folder.root
            raise SdsError(f"{exc}; {self.intact()}; free space and run `sds resume {root}`") from None

    def _train_steps(self) -> list[Path]:
        cfg = self.resolved.run
        if not self.folder.has_config():
            self.write_config()
        self.folder.truncate_metrics(self.step)
        self.emit(RunStarted(self.folder.root, self.step, self.total_steps, str(self.device)))
        started = time.perf_counter()
        with _graceful_signals() as stop, self.folder.open_metrics() as metrics:
            while self.step < self.total_steps:
                event = self.train_step()
                event = StepFinished(**{**event.__dict__, "elapsed": time.perf_counter() - started})
                if self.step % max(cfg.log_every, 1) == 0 or self.step == self.total_steps:
                    record = {"step": event.step, "loss": event.loss, **event.terms, "t": event.t, "lr": event.lr}
                    record["wall_time"] = time.time()
                    record.update({f"time_{k}": v for k, v in event.timings.items()})
                    try:
                        metrics.write((json.dumps(record) + "\n").encode("utf-8"))
                        metrics.flush()
                    except OSError as exc:
                        raise write_failure(self.folder.metrics_path, exc) from None
                self.emit(event)
                if cfg.preview_every and self.step % cfg.preview_every == 0:
                    self.write_preview()
                if stop:
                    path = self.save_checkpoint()
                    self.emit(RunFinished(self.step, [path], interrupted=True))
                    raise RunInterrupted(self.step, str(path))
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < self.total_steps:
                    self.save_checkpoint()
            with stop_at_once(self._interrupted_final):  # `sds resume` redoes this part
                self.save_checkpoint()
                outputs = self.export()
        self.emit(RunFinished(self.step, outputs))
        return outputs


def export_final(generator: Any, folder: RunFolder, context: ExportContext, step: int) -> list[Path]:
    """The generator's final artefacts, written in eval mode into a staged folder that replaces
    `folder.final` only once complete (`RunFolder.write_final`)."""
    was_training = generator.training
    generator.eval()
    try:
        return folder.write_final(lambda staged: [Path(p) for p in generator.export(staged, context)], step)
    finally:
        generator.train(was_training)
