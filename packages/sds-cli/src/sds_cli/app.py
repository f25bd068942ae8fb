"""The `sds` command. Heavy modules (torch, the loop) are imported inside commands only, so
that `sds --help` and `sds plugins` stay fast."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from sds_cli.commands.bench import bench
from sds_cli.commands.config_show import config_command
from sds_cli.commands.evaluate import eval_app
from sds_cli.commands.plugins import plugins_app
from sds_cli.defaults import DEFAULT_NAMES, DEFAULT_PRESET
from sds_cli.errors import EXIT_INTERRUPTED, fail, user_errors
from sds_cli.options import command_overrides

app = typer.Typer(
    name="sds",
    help="Text-to-3D (and text-to-anything-differentiable) through Score Distillation Sampling.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_versions(value: bool) -> None:
    if value:
        from sds_cli.text import printable
        from sds_cli.versions import version_lines

        for line in version_lines():
            typer.echo(printable(line))
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_versions, is_eager=True, help="Print the installed sds packages' versions."
        ),
    ] = False,
) -> None:
    """Text-to-3D (and text-to-anything-differentiable) through Score Distillation Sampling."""


app.add_typer(plugins_app, name="plugins")
app.add_typer(eval_app, name="eval")
app.command(name="bench")(bench)
app.command(name="config")(config_command)

PRESET_HELP = "paper (DreamFusion's settings), paper-cpu (the paper sized for a CPU) or draft (fast on a CPU)."
Preset = Annotated[str, typer.Option("--preset", help=PRESET_HELP)]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]


def _default_out(prompt: str, taken: set[Path]) -> Path:
    """runs/<prompt>, or runs/<prompt>-N for the first N whose folder is new or empty."""
    from sds_cli.batch import slug
    from sds_core.errors import ConfigError
    from sds_core.run import RunFolder

    base = Path("runs") / slug(prompt)
    candidate, n = base, 1
    while True:
        try:
            if candidate not in taken:
                RunFolder(candidate).check_new()
                return candidate
        except ConfigError:
            pass
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")


def _run_and_report(trainer: object, progress: object) -> None:
    from sds_core.errors import RunInterrupted

    try:
        outputs = trainer.run()  # type: ignore[attr-defined]
    except RunInterrupted as exc:
        progress.close()  # type: ignore[attr-defined]
        out = trainer.folder.root  # type: ignore[attr-defined]
        raise fail(f"{exc}; continue with `sds resume {out}`", EXIT_INTERRUPTED) from None
    progress.summary(outputs)  # type: ignore[attr-defined]


@app.command()
def generate(
    prompt: Annotated[
        str | None, typer.Argument(help='What to make, e.g. "a red cube" (optional with --image).')
    ] = None,
    image: Annotated[
        Path | None,
        typer.Option(
            help="Image-to-3D: a reference image (RGBA, or RGB on a plain background) for an "
            "image-conditioned guidance (--guidance zero123); docs/image-to-3d.md."
        ),
    ] = None,
    generator: Annotated[str | None, typer.Option(help="Generator plugin (default: nerf).")] = None,
    guidance: Annotated[str | None, typer.Option(help="Guidance plugin (default: shapes, the offline prior).")] = None,
    loss: Annotated[str | None, typer.Option(help="Distillation loss plugin (default: sds).")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimisation steps (overrides run.steps).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (overrides run.seed).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default: runs/<prompt>).")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help=PRESET_HELP + " Default: paper.")] = None,
    device: Device = "auto",
    config: Annotated[Path | None, typer.Option(help="Config file (JSON, TOML or YAML) of sections.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override one option: key.path=value (repeatable).")
    ] = None,
) -> None:
    """Optimise a generator so that its renders score well under a diffusion prior."""
    with user_errors():
        from sds_cli.progress import CostNotice, RunProgress
        from sds_core.lifecycle import start_run

        overrides = command_overrides(config, set_, steps, seed)
        names = {"generator": generator, "guidance": guidance, "loss": loss}
        from sds_core.errors import RunFolderBusy

        if prompt is None and image is None:
            from sds_core.errors import ConfigError

            raise ConfigError('give a prompt, e.g. sds generate "a red cube", or a reference image with --image PATH')
        text = prompt or ""
        progress = RunProgress()
        listeners: list[Any] = [progress]
        if preset is None:  # the default preset on a CPU: say what it costs, once
            listeners.append(CostNotice(progress.console, DEFAULT_PRESET))
        taken: set[Path] = set()
        while True:
            folder = out or _default_out(text or (image.stem if image is not None else ""), taken)
            try:
                trainer = start_run(
                    text,
                    folder,
                    preset or DEFAULT_PRESET,
                    overrides,
                    names,
                    device,
                    listeners=listeners,
                    defaults=DEFAULT_NAMES,
                    image=image,
                )
                break
            except RunFolderBusy:
                if out is not None:
                    raise
                taken.add(folder)  # another `sds generate` of this prompt took it a moment ago
        _run_and_report(trainer, progress)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `sds generate`.")],
    device: Device = "auto",
    steps: Annotated[int | None, typer.Option(help="Change the run's total number of steps.")] = None,
) -> None:
    """Continue a run from its last checkpoint (bit for bit on CPU)."""
    with user_errors():
        from sds_cli.progress import RunProgress
        from sds_cli.text import shown
        from sds_core.lifecycle import resume_run

        progress = RunProgress()
        trainer = resume_run(run_dir, device, listeners=[progress], steps=steps)
        if trainer.step >= trainer.total_steps and trainer.folder.final_complete():
            progress.console.print(f"{shown(str(run_dir))} is already finished ({trainer.step} steps).")
            return
        _run_and_report(trainer, progress)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder with ckpts/last.pt.")],
    format_: Annotated[
        str | None,
        typer.Option(
            "--format", help="Comma-separated: glb,obj,ply,mp4,gif,html (default: the generator's export_formats)."
        ),
    ] = None,
    resolution: Annotated[int | None, typer.Option(help="Marching-cubes grid size.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Density level of the surface.")] = None,
    device: Device = "auto",
) -> None:
    """Rebuild the final artefacts (mesh, video, image) of a run from its checkpoint."""
    with user_errors():
        from sds_cli.progress import RunProgress
        from sds_core.errors import SdsError
        from sds_core.lifecycle import load_run
        from sds_core.run import RunFolder

        if not RunFolder(run_dir).last_checkpoint.exists():
            raise SdsError(f"{run_dir} has no checkpoint (ckpts/last.pt) to export from")
        if resolution is not None:
            from sds_core.limits import check_grid_side

            check_grid_side(resolution, "--resolution")
        if threshold is not None and not math.isfinite(threshold):
            raise SdsError(f"--threshold must be a finite number, not {threshold}")
        formats = tuple(f.strip().lower() for f in format_.split(",") if f.strip()) if format_ else None
        progress = RunProgress()
        progress.out_dir = run_dir
        from sds_core.errors import RunInterrupted

        run = load_run(run_dir, device, lock=True)  # the generator only: no guidance model, no optimiser
        try:
            outputs = run.export(formats=formats, resolution=resolution, threshold=threshold)
        except RunInterrupted as exc:
            raise fail(f"{exc}; run `sds export {run_dir}` again", EXIT_INTERRUPTED) from None
        finally:
            run.release()
        progress.summary(outputs, title="exported")


@app.command()
def batch(
    prompts_file: Annotated[Path, typer.Argument(help="A text file, one prompt a line (# comments).")],
    seeds: Annotated[int, typer.Option(help="Runs per prompt, with seeds run.seed, run.seed + 1, ...")] = 1,
    out: Annotated[Path, typer.Option(help="Folder of the batch: one run folder per prompt and seed.")] = Path(
        "runs/batch"
    ),
    generator: Annotated[str | None, typer.Option(help="Generator plugin (default: nerf).")] = None,
    guidance: Annotated[str | None, typer.Option(help="Guidance plugin (default: shapes).")] = None,
    loss: Annotated[str | None, typer.Option(help="Distillation loss plugin (default: sds).")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimisation steps of each run.")] = None,
    seed: Annotated[int | None, typer.Option(help="First seed.")] = None,
    preset: Preset = DEFAULT_PRESET,
    device: Device = "auto",
    config: Annotated[Path | None, typer.Option(help="Config file applied to every run.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key.path=value for every run.")] = None,
    executor: Annotated[str, typer.Option(help="local (one run after another) or ray (a task per run).")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start a local Ray instance).")
    ] = None,
    cpus_per_run: Annotated[float, typer.Option(help="CPUs each Ray task requests.")] = 1.0,
    gpus_per_run: Annotated[float, typer.Option(help="GPUs each Ray task requests (1: one run per GPU).")] = 0.0,
    max_retries: Annotated[int, typer.Option(help="Ray retries of a run whose worker died; it resumes.")] = 3,
) -> None:
    """Run a list of prompts; finished runs are skipped, so a crashed batch resumes where it stopped."""
    with user_errors():
        from rich.console import Console

        from sds_cli.batch import SummaryWriter, plan_jobs, read_prompts, run_job, write_summary
        from sds_cli.progress import RunProgress, batch_table
        from sds_cli.text import shown
        from sds_core.errors import SdsError
        from sds_core.plugins import load_catalog
        from sds_core.resolve import resolve_config

        overrides = command_overrides(config, set_, steps, seed)
        names = {"generator": generator, "guidance": guidance, "loss": loss}
        if out.exists() and not out.is_dir():
            raise SdsError(f"--out {out} is a file, not a folder")
        if executor not in ("local", "ray"):
            raise SdsError(f"unknown executor {executor!r}; accepted: local, ray")
        if executor == "ray":
            from sds_cli.ray_executor import require_ray

            require_ray()
        prompts = read_prompts(prompts_file)
        catalog = load_catalog()
        resolve_config(
            catalog, preset, overrides, names, DEFAULT_NAMES
        )  # bad names or values fail once, before any run (and before the seeds are read)
        jobs = plan_jobs(prompts, seeds, out, preset, overrides, names, device)
        summary = SummaryWriter(out / "batch.json")
        results = []
        if executor == "ray":
            from sds_cli.ray_executor import run_batch_on_ray

            console = Console(soft_wrap=True)
            results = run_batch_on_ray(jobs, address, cpus_per_run, gpus_per_run, max_retries, console)
            write_summary(out / "batch.json", results)
            jobs = []
        for index, job in enumerate(jobs, 1):
            progress = RunProgress()
            progress.console.print(f"[bold]run {index}/{len(jobs)}[/]: {shown(repr(job.prompt))} seed {job.seed}")
            result = run_job(job, [progress], catalog)
            progress.close()
            results.append(result)
            summary.update(results)
            if result.status == "interrupted":
                break
        summary.update(results, final=True)
        console = Console(soft_wrap=True)
        console.print(batch_table(results))
        console.print(f"summary written to {shown(str(out / 'batch.json'))}")
        if any(r.status == "interrupted" for r in results):
            raise fail(f"batch interrupted; run the same command again to continue in {out}", EXIT_INTERRUPTED)
        if any(r.status == "failed" for r in results):
            raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    from sds_cli.errors import install_warning_display

    install_warning_display()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
