"""A run's life outside the loop itself: start one in a new folder, resume it from its last
checkpoint (or from scratch), read a folder's record and config, tell whether it is finished, and
load it for inference: the generator from the last checkpoint, without building the guidance's
model, a loss or an optimiser, and without touching the process's random state (`sds export`,
`sds eval`). The optimisation itself is the Trainer's (`sds_core.loop`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sds_core.cameras import CameraSampler
from sds_core.checkpoint import checkpoint_step, load_checkpoint, rng_state, set_rng_state
from sds_core.errors import ConfigError, RunInterrupted, SdsError
from sds_core.events import Listener
from sds_core.files import RunLock
from sds_core.loop import Trainer, export_final, resolve_device, stop_at_once
from sds_core.plugins import Catalog, load_catalog
from sds_core.protocols import BuildContext, ExportContext, Guidance, GuidanceFacts
from sds_core.reference import ReferenceImage, load_kept, load_reference, reference_options
from sds_core.resolve import ResolvedConfig, resolve_config
from sds_core.run import RunFolder, check_record

# --- training runs -------------------------------------------------------------------------------


def start_run(
    prompt: str,
    out_dir: Path,
    preset: str = "paper",
    overrides: dict[str, Any] | None = None,
    names: dict[str, str | None] | None = None,
    device: str = "auto",
    listeners: Sequence[Listener] = (),
    catalog: Catalog | None = None,
    defaults: dict[str, str] | None = None,
    image: Path | None = None,
) -> Trainer:
    """A new run in `out_dir`, which must be new or empty; the folder stays locked for the trainer.
    `defaults`: the plugin names of sections neither `names` nor `overrides` name. `image`: the
    reference image of an image-conditioned guidance (`sds generate --image`; the prompt may then
    be empty)."""
    if not prompt.strip() and image is None:
        raise ConfigError('the prompt is empty; pass the text to generate, e.g. "a red cube"')
    folder = RunFolder(Path(out_dir))
    folder.check_new()
    catalog = catalog or load_catalog()
    resolved = resolve_config(catalog, preset=preset, overrides=overrides, names=names, defaults=defaults)
    torch_device = resolve_device(device)
    reference: ReferenceImage | None = None
    options = reference_options(resolved.plugin_configs["guidance"], resolved.specs["guidance"].name, image is not None)
    if options is not None and image is not None:  # read before the folder is made: a bad image leaves nothing
        reference = load_reference(image, options)
    lock = folder.lock()
    try:
        folder.check_new()  # again, holding the lock: another process may have claimed it meanwhile
        source = None if image is None else str(image)
        return Trainer(resolved, prompt, Path(out_dir), torch_device, list(listeners), lock, reference, source)
    except BaseException:
        lock.discard()  # a refused run leaves nothing behind
        raise


def restore(load: Callable[[dict[str, Any]], Any], state: dict[str, Any], path: Path) -> None:
    """load(state), a state that does not fit the built components being one sentence."""
    try:
        load(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError, AssertionError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise SdsError(f"{path} does not match the run's config ({reason})") from None


def resume_run(
    out_dir: Path,
    device: str = "auto",
    listeners: Sequence[Listener] = (),
    catalog: Catalog | None = None,
    steps: int | None = None,
    lock: bool = True,
) -> Trainer:
    """The run in `out_dir`, restored from ckpts/last.pt (or from scratch if none was written).

    A run whose config.json was lost is rebuilt from its checkpoint (which holds the prompt and
    the config). lock=False reads the run without locking or writing anything (evaluation)."""
    folder = RunFolder(Path(out_dir))
    if not (folder.has_config() or folder.has_checkpoint()):
        raise SdsError(
            f"{out_dir} holds no run (no config.json or ckpts/last.pt); start one with `sds generate --out {out_dir}`"
        )
    folder.check_layout()
    run_lock = folder.lock() if lock else None
    try:
        trainer = _resume(folder, device, listeners, catalog, steps, run_lock)
    except BaseException:
        if run_lock is not None:
            run_lock.release()
        raise
    return trainer


def _resume(
    folder: RunFolder,
    device: str,
    listeners: Sequence[Listener],
    catalog: Catalog | None,
    steps: int | None,
    run_lock: RunLock | None,
) -> Trainer:
    record, payload, resolved = read_run(folder, catalog, steps)
    reference = None
    options = reference_options(resolved.plugin_configs["guidance"], resolved.specs["guidance"].name, "image" in record)
    if options is not None:  # the kept copy, checked against its recorded SHA-256
        reference = load_kept(folder.root, record["image"], options)
    source = record["image"].get("source") if reference is not None else None
    source = source if isinstance(source, str) else None
    trainer = Trainer(
        resolved, record["prompt"], folder.root, resolve_device(device), list(listeners), run_lock, reference, source
    )
    if payload:
        restore(trainer.load_state, payload, folder.last_checkpoint)
    changed = steps is not None and steps != record["config"]["run"].get("steps")
    if run_lock is not None and (changed or not folder.has_config()):
        trainer.write_config()
    return trainer


def read_run(
    folder: RunFolder, catalog: Catalog | None = None, steps: int | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None, ResolvedConfig]:
    """A run folder's record (config.json, or the checkpoint's copy when it was lost), its last
    checkpoint (None before the first) and its resolved config, `steps` lengthening it."""
    last = folder.last_checkpoint
    payload = load_checkpoint(last, map_location="cpu", root=folder.root) if folder.has_checkpoint() else None
    if folder.has_config():
        record = folder.read_config()
    else:  # config.json was lost: the checkpoint holds what it said
        payload = payload or {}
        fields = {
            "prompt": payload.get("prompt"),
            "preset": payload.get("preset", "paper"),
            "config": payload.get("config"),
            **({"image": payload["image"]} if "image" in payload else {}),
        }
        record = check_record(fields, folder.last_checkpoint)
    tree = record["config"]
    done = int(payload["step"]) if payload else 0
    if steps is not None and steps < done:
        raise ConfigError(
            f"--steps {steps} is fewer than the {done} steps {folder.root} has done; a run is not shortened"
        )
    if steps is not None:
        tree = {**tree, "run": {**tree["run"], "steps": steps}}
    catalog = catalog or load_catalog()
    try:
        names = {section: tree[section]["name"] for section in ("generator", "guidance", "loss")}
        overrides = {k: {kk: vv for kk, vv in v.items() if kk != "name"} for k, v in tree.items()}
    except (KeyError, TypeError, AttributeError):
        raise SdsError(f"the config of {folder.root} lacks its generator, guidance or loss section") from None
    resolved = resolve_config(catalog, preset=record.get("preset", "paper"), overrides=overrides, names=names)
    return record, payload, resolved


def is_finished(out_dir: Path) -> bool:
    """True when the run in out_dir has written its final checkpoint and a complete final/ (an
    interrupted or failed export leaves none; an older version's final/ without the mark counts
    as incomplete and is rebuilt)."""
    folder = RunFolder(Path(out_dir))
    if not (folder.has_config() and folder.has_checkpoint() and folder.final_complete()):
        return False
    total = folder.read_config()["config"]["run"].get("steps")
    return isinstance(total, int) and checkpoint_step(folder.last_checkpoint, root=folder.root) >= total


# --- a run loaded for inference ------------------------------------------------------------------


@dataclass
class LoadedRun:
    """A run's generator in eval mode, with what rendering and exporting it needs."""

    folder: RunFolder
    prompt: str
    resolved: ResolvedConfig
    device: torch.device
    generator: Any
    cameras: CameraSampler
    step: int
    facts: GuidanceFacts  # what the generator read from the guidance when it was trained
    lock: RunLock | None = None
    _guidance: Guidance | None = None

    def guidance(self) -> Guidance:
        """The run's guidance, built on first use (for a model-based prior this loads its weights):
        only decoding latents and a prior's ground truth need it."""
        if self._guidance is None:
            self._guidance = _build_guidance(self.resolved, self.prompt, self.device)
        return self._guidance

    def decode(self, x: Tensor) -> Tensor:
        """Model space -> RGB: the identity's job for RGB generators, the guidance's for latents."""
        return x if x.shape[1] == 3 else self.guidance().decode(x)

    def export(
        self, formats: tuple[str, ...] | None = None, resolution: int | None = None, threshold: float | None = None
    ) -> list[Path]:
        """Rebuild final/ (all formats unless `formats`)."""
        context = ExportContext(self.cameras, self.prompt, self.device, formats, resolution, threshold, self.decode)
        detail = f"interrupted while writing {self.folder.final}; it was left as it was"
        with stop_at_once(lambda: RunInterrupted(self.step, "", detail)):
            return export_final(self.generator, self.folder, context, self.step)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def load_run(out_dir: Path, device: str = "auto", catalog: Catalog | None = None, lock: bool = False) -> LoadedRun:
    """The run in `out_dir` from ckpts/last.pt, for rendering and export. lock=True holds the run
    folder's lock (to write final/) until `release`."""
    folder = RunFolder(Path(out_dir))
    if not folder.has_checkpoint():
        raise SdsError(f"{out_dir} has no checkpoint (ckpts/last.pt) to load")
    folder.check_layout()
    run_lock = folder.lock() if lock else None
    try:
        return _load(folder, device, catalog, run_lock)
    except BaseException:
        if run_lock is not None:
            run_lock.release()
        raise


def _build_guidance(resolved: ResolvedConfig, prompt: str, device: torch.device) -> Guidance:
    context = BuildContext(device, prompt, resolved.run.steps, config=resolved.tree)
    return resolved.specs["guidance"].build(resolved.plugin_configs["guidance"], context)  # type: ignore[no-any-return]


def _load(folder: RunFolder, device: str, catalog: Catalog | None, run_lock: RunLock | None) -> LoadedRun:
    record, payload, resolved = read_run(folder, catalog)
    assert payload is not None  # the checkpoint exists
    torch_device = resolve_device(device)
    prompt = record["prompt"]
    guidance: Guidance | None = None
    if "guidance" in payload:
        facts = GuidanceFacts.from_dict(payload["guidance"], source=str(folder.last_checkpoint))
    else:  # a checkpoint written before runs recorded them: the guidance is built to read them
        guidance = _build_guidance(resolved, prompt, torch_device)
        facts = GuidanceFacts.of(guidance)
    state = rng_state()  # building a generator draws its initial weights: the caller's RNG is kept
    try:
        context = BuildContext(torch_device, prompt, resolved.run.steps, guidance, resolved.tree, facts)
        generator = resolved.specs["generator"].build(resolved.plugin_configs["generator"], context).to(torch_device)
        restore(generator.load_state_dict, payload["generator"], folder.last_checkpoint)
        cameras = CameraSampler(resolved.cameras)
    finally:
        set_rng_state(state)
    generator.eval()
    step = int(payload["step"])
    return LoadedRun(folder, prompt, resolved, torch_device, generator, cameras, step, facts, run_lock, guidance)
