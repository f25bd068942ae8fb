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


def progress_state(trainer: SteppedTrainer) -> dict[str, Any]:
    """The step, time and losses of a trainer's state (`load_progress` reads them back)."""
    return {"step": trainer.step, "elapsed": trainer.elapsed, "log": trainer.log, "window": trainer.window}


def load_progress(trainer: SteppedTrainer, state: dict[str, Any]) -> None:
    """Set the step, time and losses saved by `progress_state`."""
    trainer.step, trainer.elapsed, trainer.log = state["step"], state["elapsed"], state["log"]
    trainer.window = state.get("window", [])  # states written before it was saved: an empty window


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
