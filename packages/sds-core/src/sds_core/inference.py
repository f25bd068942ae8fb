"""A finished (or interrupted) run loaded for inference: the generator from the last checkpoint,
without building the guidance's model, a loss or an optimiser, and without touching the process's
random state. `sds export` and `sds eval` use it; `sds resume` uses the trainer (`sds_core.loop`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sds_core.cameras import CameraSampler
from sds_core.checkpoint import rng_state, set_rng_state
from sds_core.errors import RunInterrupted, SdsError
from sds_core.files import RunLock
from sds_core.loop import export_final, read_run, resolve_device, restore, stop_at_once
from sds_core.plugins import Catalog
from sds_core.protocols import BuildContext, ExportContext, Guidance, GuidanceFacts
from sds_core.resolve import ResolvedConfig
from sds_core.run import RunFolder


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
