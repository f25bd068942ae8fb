"""`sds eval ...`: CLIP R-Precision (DreamFusion Table 1) and shapes-world geometry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sds_cli.errors import user_errors
from sds_cli.text import printable, shown

eval_app = typer.Typer(help="Evaluate finished runs.", no_args_is_help=True)
Runs = Annotated[list[Path], typer.Argument(help="Run folders written by `sds generate` or `sds batch`.")]


def _require_eval() -> None:
    import importlib.util

    from sds_core.errors import SdsError

    if importlib.util.find_spec("sds_eval") is None:
        raise SdsError("sds eval needs the sds-eval package; install it with `pip install ./packages/sds-eval`")


def check_outputs(json_path: Path | None, **at_least: tuple[int, int]) -> None:
    """Options checked before any run is loaded: counts (value, minimum) and the --json file, whose
    folder must exist and be writable (the report is written after the whole evaluation)."""
    import os

    from sds_core.errors import SdsError

    for name, (value, minimum) in at_least.items():
        if value < minimum:
            raise SdsError(f"--{name} must be at least {minimum}, not {value}")
    if json_path is None:
        return
    if json_path.is_dir():
        raise SdsError(f"--json {json_path} is a folder; give the path of the JSON file to write")
    parent = json_path.parent
    if not parent.is_dir():
        raise SdsError(f"--json {json_path}: the folder {parent} does not exist; make it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SdsError(f"--json {json_path}: the folder {parent} is not writable by you")
    if json_path.exists() and not json_path.is_file():
        raise SdsError(f"--json {json_path} exists and is not a regular file")


def _write_json(json_path: Path | None, data: Any, what: str) -> None:
    """The --json file (checked by `check_outputs` before the evaluation), written atomically."""
    if json_path is None:
        return
    from sds_core.files import atomic_write

    atomic_write(json_path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    typer.echo(f"{what} written to {printable(json_path)}")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def r_precision_table(report: dict[str, Any]) -> Table:
    """Rows per run, then the aggregate and DreamFusion's Table 1; colour and geometry per model."""
    models = list(report["r_precision"])
    table = Table(title=f"CLIP R-Precision (%), {report['captions']} captions, {report['views']} views per run")
    table.add_column("run", overflow="fold")
    for model in models:
        short = shown(model.rstrip("/").split("/")[-1])
        table.add_column(f"{short} colour", justify="right")
        table.add_column(f"{short} geo", justify="right")
    for entry in report["runs"]:
        cells = [_pct(entry["r_precision"][m][mode]) for m in models for mode in ("color", "geometry")]
        table.add_row(f"{shown(entry['run'])}\n[dim]{shown(entry['prompt'])}[/]", *cells)
    table.add_row(
        "[bold]all runs[/]",
        *[f"[bold]{_pct(report['r_precision'][m][mode])}[/]" for m in models for mode in ("color", "geometry")],
    )
    paper = report.get("table1_dreamfusion", {})
    if paper:
        cells = [f"{paper[m][key]:.1f}" if m in paper else "" for m in models for key in ("color", "geometry")]
        table.add_row("[italic]DreamFusion, Table 1[/]", *cells)
    return table


@eval_app.command("clip-r-precision")
def clip_r_precision_command(
    runs: Runs,
    clip: Annotated[list[str] | None, typer.Option("--clip", help="CLIP hub id or folder (repeatable).")] = None,
    views: Annotated[int, typer.Option(help="Azimuths per run, at 30 degrees elevation.")] = 8,
    prompts: Annotated[Path | None, typer.Option(help="Distractor captions (default: the 153 COCO captions).")] = None,
    resolution: Annotated[int, typer.Option(help="Side of the evaluation renders, in pixels.")] = 128,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    allow_pickled_weights: Annotated[
        bool,
        typer.Option(help="Accept CLIP folders with only pickled .bin weights (unpickled; trust them first)."),
    ] = False,
) -> None:
    """R-Precision of each run's colour and textureless renders against the caption set."""
    with user_errors():
        _require_eval()
        from sds_core.errors import SdsError
        from sds_core.run import RunFolder
        from sds_eval.evaluate import check_render_options, clip_r_precision, distractor_captions

        check_outputs(json_path, views=(views, 1), resolution=(resolution, 1))
        check_render_options(views, resolution)
        for run in runs:
            if not RunFolder(run).last_checkpoint.exists():
                raise SdsError(f"{run} has no checkpoint (ckpts/last.pt) to evaluate")
        distractor_captions(prompts)  # read and checked now: a bad file fails before any rendering
        models = clip or ["openai/clip-vit-base-patch32"]
        report = clip_r_precision(
            runs, models, views, prompts, resolution, device, allow_pickled_weights=allow_pickled_weights
        )
        Console(soft_wrap=True).print(r_precision_table(report))
        _write_json(json_path, report, "report")


@eval_app.command("geometry")
def geometry_command(
    runs: Runs,
    resolution: Annotated[int, typer.Option(help="Voxels per side of the IoU grid.")] = 64,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
) -> None:
    """IoU, Chamfer distance and colour error of shapes-world runs against the true object.

    "IoU yaw-free" is the best IoU over turns about z for an object a quarter turn leaves unchanged
    (the cube), whose yaw view-captioned training images cannot fix; the turn is shown beside it.
    """
    with user_errors():
        _require_eval()
        from sds_eval.geometry import check_eval_resolution, run_geometry

        check_outputs(json_path, resolution=(resolution, 2))
        check_eval_resolution(resolution)
        rows = [run_geometry(run, resolution, device) for run in runs]
        Console(soft_wrap=True).print(geometry_table(rows))
        _write_json(json_path, {"runs": rows}, "results")


def geometry_table(rows: list[dict[str, Any]]) -> Table:
    """One row per run: the object, IoU (plain and yaw-free), Chamfer, colour error and level."""
    table = Table(title="shapes-world geometry")
    # the Janus score's column only when a run's object has a front (the bird, the marked cube)
    janus = any(row.get("janus") is not None for row in rows)
    columns = ("run", "object", "IoU", "IoU yaw-free", "Chamfer", "colour error", "level")
    for column in (*columns, "Janus (front)") if janus else columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        colour = row.get("colour_error")
        extra = [_janus_cell(row)] if janus else []
        table.add_row(
            shown(row["run"]),
            shown(row["object"]),
            f"{row['iou']:.3f}",
            f"{row['iou_yaw_free']:.3f}" + (f" at {row['yaw_degrees']:g} deg" if row["yaw_degrees"] else ""),
            f"{row['chamfer']:.4f}",
            "n/a" if colour is None else f"{colour:.3f}",
            "mesh" if row["level"] is None else f"{row['level']:.3g}",
            *extra,
        )
    return table


def _janus_cell(row: dict[str, Any]) -> str:
    """The Janus score with the front part's recall beside it, or n/a for an object without a front."""
    if row.get("janus") is None:
        return "n/a"
    return f"{row['janus']:.3f} ({row['janus_front']:.3f})"
