"""`sds batch --executor ray`: each run a Ray task that holds its own CPUs / GPU.

A task writes its run folder under the shared --out; when Ray retries a task whose worker died,
`run_job` finds the folder's ckpts/last.pt and resumes from it, so a lost worker costs only the
steps since the last checkpoint. Ray is optional: nothing here imports it at module level.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sds_cli.batch import BatchJob, JobResult, slug
from sds_core.errors import SdsError

INSTALL_HINT = 'pip install "sds-cli[ray]"'
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
UPDATE_EVERY = 0.5  # seconds between progress messages from a task


def require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SdsError(f"--executor ray needs Ray, which is not installed; install it with {INSTALL_HINT}") from None


def task_name(index: int, job: BatchJob) -> str:
    """The Ray task name (and the worker's process title, `ray::<name>`)."""
    return f"sds-{index:03d}-{slug(job.prompt)}-seed{job.seed}"


def _progress_board() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class ProgressBoard:
        """Latest progress of every run, posted by the tasks, read by the driver."""

        def __init__(self) -> None:
            self.rows: dict[str, dict[str, Any]] = {}

        def post(self, key: str, row: dict[str, Any]) -> None:
            self.rows[key] = {**self.rows.get(key, {}), **row}

        def snapshot(self) -> dict[str, dict[str, Any]]:
            return self.rows

    return ProgressBoard.remote()  # type: ignore[attr-defined]


def _run_task(job: BatchJob, key: str, board: Any) -> JobResult:
    """The body of one Ray task: run (or resume) the job, posting progress to the board."""
    import socket

    from sds_cli.batch import run_job
    from sds_core.events import RunStarted, StepFinished

    node = socket.gethostname()
    state = {"last": 0.0, "start_step": 0, "started": time.perf_counter()}

    def listener(event: Any) -> None:
        if isinstance(event, RunStarted):
            state["start_step"] = event.start_step
            state["started"] = time.perf_counter()
            board.post.remote(key, {"status": "resumed" if event.start_step else "running", "node": node})
        elif isinstance(event, StepFinished):
            now = time.perf_counter()
            if now - state["last"] < UPDATE_EVERY and event.step < event.total_steps:
                return
            state["last"] = now
            speed = (event.step - state["start_step"]) / max(now - state["started"], 1e-9)
            row = {"step": event.step, "total": event.total_steps, "loss": event.loss, "speed": speed, "node": node}
            board.post.remote(key, row)

    result = run_job(job, [listener])
    board.post.remote(key, {"status": result.status, "node": node})
    return result


def _table(jobs: dict[str, BatchJob], rows: dict[str, dict[str, Any]]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="sds batch on Ray")
    for column in ("run", "status", "step", "loss", "it/s", "node"):
        table.add_column(column, overflow="fold")
    for key, job in jobs.items():
        row = rows.get(key, {})
        step = f"{row['step']}/{row['total']}" if "step" in row else "-"
        loss = f"{row['loss']:.4g}" if "loss" in row else "-"
        speed = f"{row['speed']:.2f}" if "speed" in row else "-"
        table.add_row(
            escape(f"{job.prompt} (seed {job.seed})"),
            row.get("status", "queued"),
            step,
            loss,
            speed,
            escape(row.get("node", "")),
        )
    return table


def run_batch_on_ray(
    jobs: list[BatchJob],
    address: str | None,
    cpus_per_run: float,
    gpus_per_run: float,
    max_retries: int,
    console: Any,
) -> list[JobResult]:
    """Submit every job as a Ray task and wait, showing one live line per run."""
    init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    host = (address or "").rsplit(":", 1)[0]
    if address is None or host in LOOPBACK:
        # A one-machine cluster stays on loopback: Ray otherwise swaps 127.0.0.1 for the machine's
        # outward address (ray._private.services.resolve_ip_for_localhost), unless this is set
        # before Ray is imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        init["_node_ip_address"] = "127.0.0.1"
    require_ray()
    import ray
    from rich.live import Live

    ray.init(address=address, **init)
    try:
        board = _progress_board()
        remote = ray.remote(_run_task)
        pending: dict[Any, tuple[str, BatchJob]] = {}
        by_key: dict[str, BatchJob] = {}
        for index, job in enumerate(jobs):
            key = task_name(index, job)
            options = {
                "name": key,
                "num_cpus": cpus_per_run,
                "num_gpus": gpus_per_run,
                "max_retries": max_retries,
                "retry_exceptions": False,  # retry lost workers only; a run's own error is final
            }
            pending[remote.options(**options).remote(job, key, board)] = (key, job)
            by_key[key] = job
        results: dict[str, JobResult] = {}
        with Live(_table(by_key, {}), console=console, refresh_per_second=4, transient=not console.is_terminal) as live:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=UPDATE_EVERY)
                for ref in ready:
                    key, job = pending.pop(ref)
                    try:
                        results[key] = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - retries exhausted, node lost, ...
                        results[key] = JobResult(job.prompt, job.seed, job.out_dir, "failed", error=_reason(exc))
                live.update(_table(by_key, ray.get(board.snapshot.remote())))
        return [results[key] for key in by_key]
    finally:
        ray.shutdown()


def _reason(exc: BaseException) -> str:
    """The first line of a Ray error (they carry long tracebacks)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
