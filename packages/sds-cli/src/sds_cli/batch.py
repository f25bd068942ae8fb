"""Prompt batches: one run folder per (prompt, seed), finished runs skipped, unfinished ones resumed.

`run_job` is a plain function of picklable arguments so that other executors (Ray) can call it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sds_cli.defaults import DEFAULT_PRESET
from sds_core.errors import SdsError
from sds_core.limits import check_seed

SUMMARY_EVERY_S = 30.0  # batch.json is rewritten at most this often while a batch runs, and at its end


@dataclass(frozen=True)
class BatchJob:
    """One run of a batch."""

    prompt: str
    seed: int
    out_dir: str
    preset: str = DEFAULT_PRESET
    overrides: dict[str, Any] = field(default_factory=dict)
    names: dict[str, str | None] = field(default_factory=dict)
    device: str = "auto"
    batch_dir: str = ""  # the batch's folder: the run folder below it is made without following links


@dataclass
class JobResult:
    prompt: str
    seed: int
    out_dir: str
    status: str  # "finished", "resumed", "skipped", "failed", "interrupted"
    steps: int = 0
    seconds: float = 0.0
    error: str = ""
    node: str = ""


def read_prompts(path: Path) -> list[str]:
    """Non-empty lines that are not comments (#)."""
    if not path.is_file():
        raise SdsError(f"prompts file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SdsError(f"prompts file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise SdsError(f"prompts file {path} cannot be read: {exc.strerror}") from None
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise SdsError(f"prompts file {path} holds no prompt (one a line; # starts a comment)")
    return prompts


def slug(prompt: str) -> str:
    """A folder name for a prompt: lower-case words joined by '-', at most 48 characters."""
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:48] or "run"


def plan_jobs(
    prompts: list[str],
    seeds: int,
    out: Path,
    preset: str,
    overrides: dict[str, Any],
    names: dict[str, str | None],
    device: str,
) -> list[BatchJob]:
    """One job per prompt and seed, each in OUT/<index>-<prompt slug>/seed-<k>."""
    if seeds < 1:
        raise SdsError(f"--seeds must be at least 1, not {seeds}")
    base_seed = check_seed(overrides.get("run", {}).get("seed", 0))
    check_seed(base_seed + seeds - 1, f"the last seed of the batch (run.seed {base_seed} + {seeds - 1})")
    jobs = []
    for index, prompt in enumerate(prompts):
        for k in range(seeds):
            folder = out / f"{index:03d}-{slug(prompt)}" / f"seed-{base_seed + k}"
            run_over = {**overrides, "run": {**overrides.get("run", {}), "seed": base_seed + k}}
            jobs.append(BatchJob(prompt, base_seed + k, str(folder), preset, run_over, names, device, str(out)))
    return jobs


def run_job(job: BatchJob, listeners: list[Any] | None = None, catalog: Any = None) -> JobResult:
    """Run, resume or skip one job; errors become a failed result, not an exception."""
    import socket

    from sds_cli.defaults import DEFAULT_NAMES
    from sds_core.errors import RunInterrupted
    from sds_core.lifecycle import is_finished, resume_run, start_run
    from sds_core.run import RunFolder

    started = time.perf_counter()
    node = socket.gethostname()
    folder = RunFolder(Path(job.out_dir))
    result = JobResult(job.prompt, job.seed, job.out_dir, "finished", node=node)
    try:
        if job.batch_dir:  # OUT/<prompt>/seed-<k>: made as folders, a link planted there refused
            from sds_core.files import folder_fd

            with folder_fd(Path(job.batch_dir), Path(job.out_dir).relative_to(job.batch_dir).parts):
                pass
        if is_finished(folder.root):
            result.status = "skipped"
            result.steps = int(folder.read_config()["config"]["run"]["steps"])
            return result
        if folder.has_config() or folder.has_checkpoint():
            trainer = resume_run(folder.root, job.device, listeners or [], catalog=catalog)
            result.status = "resumed" if trainer.step > 0 else "finished"
        else:
            trainer = start_run(
                job.prompt,
                folder.root,
                job.preset,
                job.overrides,
                job.names,
                job.device,
                listeners or [],
                catalog,
                defaults=DEFAULT_NAMES,
            )
        trainer.run()
        result.steps = trainer.step
    except RunInterrupted as exc:
        result.status, result.error, result.steps = "interrupted", str(exc), exc.step
    except SdsError as exc:
        result.status, result.error = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - one broken run must not stop the batch
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - started
    return result


class SummaryWriter:
    """Writes batch.json at most every `every` seconds while the batch runs (a 100k-prompt batch
    would otherwise rewrite it 100k times), and whenever `final`."""

    def __init__(self, path: Path, every: float = SUMMARY_EVERY_S) -> None:
        self.path = path
        self.every = every
        self._last = time.monotonic()

    def update(self, results: list[JobResult], final: bool = False) -> None:
        if final or time.monotonic() - self._last >= self.every:
            write_summary(self.path, results)
            self._last = time.monotonic()


def write_summary(path: Path, results: list[JobResult]) -> None:
    from sds_core.files import atomic_write

    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    payload = {"counts": counts, "runs": [asdict(r) for r in results]}
    atomic_write(path, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
