"""The timed, logged step both training stages share (the autoencoder's and the diffusion model's)."""

from __future__ import annotations

import time
from typing import Any, Protocol


class SteppedTrainer(Protocol):
    step: int
    elapsed: float
    log: list[dict[str, float]]
    # the losses since the last logged step, saved with the state so that a run resumed between
    # two logged steps logs the same means as an uninterrupted one
    window: list[dict[str, float]]

    def train_step(self, bank: Any) -> dict[str, float]: ...


def logged_step(trainer: SteppedTrainer, bank: Any, every: int) -> dict[str, float] | None:
    """One training step, its time added to `trainer.elapsed` and its losses to `trainer.window`;
    every `every` steps the window's means are appended to `trainer.log` (with the step and the time so
    far), the window is emptied and the entry returned (None on the other steps)."""
    start = time.monotonic()
    window = trainer.window
    window.append(trainer.train_step(bank))
    trainer.elapsed += time.monotonic() - start
    if trainer.step % every:
        return None
    entry = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
    trainer.log.append({"step": trainer.step, **entry, "elapsed_s": round(trainer.elapsed, 1)})
    window.clear()
    return entry
