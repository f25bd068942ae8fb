"""What the terminal shows during a run: a rich progress bar, or plain lines when piped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sds_cli.text import shown


def _fmt_seconds(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class RunProgress:
    """Listens to the loop's events (sds_core.events) and reports them.

    On a terminal: a live bar with step/total, loss, t, it/s, elapsed and ETA. Elsewhere (a log
    file, CI): one plain line every `plain_every` steps and at the end.
    """

    def __init__(self, console: Console | None = None, plain_every: int = 50) -> None:
        self.console = console or Console(soft_wrap=True)
        self.plain_every = max(plain_every, 1)
        self.progress: Progress | None = None
        self.task: Any = None
        self.start_step = 0
        self.started = time.perf_counter()
        self.written: dict[str, Path] = {}
        self.out_dir: Path | None = None

    @property
    def live(self) -> bool:
        return self.console.is_terminal

    def __call__(self, event: Any) -> None:
        from sds_core.events import ArtifactWritten, RunFinished, RunStarted, StepFinished

        if isinstance(event, RunStarted):
            self.on_start(event)
        elif isinstance(event, StepFinished):
            self.on_step(event)
        elif isinstance(event, ArtifactWritten):
            self.written[event.kind if event.kind != "final" else str(event.path)] = event.path
        elif isinstance(event, RunFinished):
            self.close()

    def on_start(self, event: Any) -> None:
        self.out_dir = event.out_dir
        self.start_step = event.start_step
        self.started = time.perf_counter()
        note = f" (resumed at step {event.start_step})" if event.start_step else ""
        self.console.print(
            f"run folder [bold]{shown(event.out_dir)}[/] on {shown(event.device)}{note}", highlight=False
        )
        if self.live:
            self.progress = Progress(
                TextColumn("[bold blue]sds"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("t {task.fields[t]}"),
                TextColumn("{task.fields[speed]} it/s"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "sds", total=event.total_steps, completed=event.start_step, loss="-", t="-", speed="-"
            )

    def _speed(self, step: int) -> float:
        elapsed = time.perf_counter() - self.started
        return (step - self.start_step) / elapsed if elapsed > 0 else 0.0

    def on_step(self, event: Any) -> None:
        speed = self._speed(event.step)
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=event.step,
                loss=f"{event.loss:.4g}",
                t=f"{event.t:.2f}",
                speed=f"{speed:.2f}",
            )
        elif event.step % self.plain_every == 0 or event.step == event.total_steps:
            remaining = (event.total_steps - event.step) / speed if speed > 0 else 0.0
            elapsed = time.perf_counter() - self.started
            self.console.print(
                f"step {event.step}/{event.total_steps}  loss {event.loss:.4g}  t {event.t:.2f}  "
                f"{speed:.2f} it/s  elapsed {_fmt_seconds(elapsed)}  eta {_fmt_seconds(remaining)}",
                highlight=False,
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def summary(self, outputs: list[Path], title: str = "done") -> None:
        """The final panel: every file the run wrote that a person would open."""
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for path in outputs:
            table.add_row("final", shown(path))
        if self.out_dir is not None:
            from sds_core.run import RunFolder

            folder = RunFolder(self.out_dir)
            for label, path in (
                ("config", folder.config_path),
                ("metrics", folder.metrics_path),
                ("checkpoint", folder.last_checkpoint),
                ("previews", folder.previews),
            ):
                if path.exists():
                    table.add_row(label, shown(path))
        self.console.print(Panel(table, title=shown(title), expand=False))


def _fmt_duration(seconds: float) -> str:
    """A rough duration for a one-line estimate: "40 min", "5.2 h", "6.1 days"."""
    if seconds < 3600:
        return f"{max(seconds / 60, 1):.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class CostNotice:
    """One line, on a CPU, with what the preset chosen by default costs, measured on the first
    steps (after `warmup` steps, which include one-off costs), and the presets sized for a CPU."""

    def __init__(self, console: Console, preset: str, warmup: int = 3) -> None:
        self.console, self.preset, self.warmup = console, preset, warmup
        self.cpu = False
        self.first: tuple[int, float] | None = None
        self.done = False

    def __call__(self, event: Any) -> None:
        from sds_core.events import RunStarted, StepFinished

        if isinstance(event, RunStarted):
            self.cpu = event.device == "cpu"
        elif isinstance(event, StepFinished) and self.cpu and not self.done:
            if self.first is None:
                self.first = (event.step, event.elapsed)
            elif event.step - self.first[0] >= self.warmup:
                per_step = (event.elapsed - self.first[1]) / (event.step - self.first[0])
                eta = per_step * (event.total_steps - event.step)
                self.console.print(
                    f"the {self.preset} preset on this CPU: {per_step:.1f} s a step, "
                    f"{event.total_steps:,} steps, about {_fmt_duration(eta)} to go; "
                    "--preset paper-cpu (the paper's components, sized for a CPU) or --preset draft "
                    "finish in minutes (Ctrl-C stops with a checkpoint)."
                )
                self.done = True


def batch_table(results: list[Any]) -> Table:
    """One row per run of a batch: status, steps, time, and the reason of a failure."""
    table = Table(title="batch")
    for column in ("prompt", "seed", "status", "steps", "seconds", "node", "error"):
        table.add_column(column, overflow="fold")
    styles = {"failed": "red", "interrupted": "yellow", "skipped": "dim"}
    for r in results:
        status = f"[{styles[r.status]}]{r.status}[/]" if r.status in styles else shown(r.status)
        table.add_row(
            shown(r.prompt), shown(r.seed), status, shown(r.steps), f"{r.seconds:.1f}", shown(r.node), shown(r.error)
        )
    return table
