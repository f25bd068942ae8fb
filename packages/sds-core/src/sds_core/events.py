"""Events the loop emits, for whoever listens (the CLI's progress, a batch executor, tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RunStarted:
    out_dir: Path
    start_step: int
    total_steps: int
    device: str


@dataclass(frozen=True)
class StepFinished:
    step: int  # 1-based count of finished steps
    total_steps: int
    loss: float
    terms: dict[str, float]
    t: float
    lr: float
    timings: dict[str, float]  # seconds: render, guidance, backward, optimizer
    elapsed: float  # seconds since this process started the run


@dataclass(frozen=True)
class ArtifactWritten:
    kind: str  # "checkpoint", "preview", "final"
    path: Path
    step: int


@dataclass(frozen=True)
class RunFinished:
    step: int
    outputs: list[Path] = field(default_factory=list)
    interrupted: bool = False


Event = RunStarted | StepFinished | ArtifactWritten | RunFinished
Listener = Callable[[Event], None]
