"""`sds bench`: ms per step split into render / guidance / backward / optimiser against the
prior's own cost, peak memory and the projected time of the preset's steps, per generator, on the
machine at hand; a table, and with `--json` a stored result (command, commit, date, machine, torch,
CUDA, driver, device)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_GENERATORS = ("nerf", "mesh", "gaussians", "image")


def bench_table(rows: list[dict[str, Any]]) -> Any:
    """The terminal table of a bench's rows."""
    from rich import box
    from rich.table import Table

    from sds_cli.text import shown

    memory = "CUDA peak allocated" if rows and rows[0]["device"] == "cuda" else "peak resident set"
    title = f"ms per step: render/guidance/backward/optimiser; prior: its own cost; MB: {memory}"
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in ("generator", "step", "split", "prior", "ratio", "MB", "preset run"):
        table.add_column(column, justify="left" if column in ("generator", "split") else "right", no_wrap=True)
    for row in rows:
        split = "/".join(f"{row[f'step_{part}_ms']:.0f}" for part in ("render", "guidance", "backward", "optimizer"))
        table.add_row(
            shown(row["generator"]),
            f"{row['step_ms']:.1f}",
            split,
            f"{row['prior_ms']:.1f}",
            f"{row['ratio']:.2f}",
            f"{row['peak_mb']:.0f}",
            f"{row['projected_preset_min']:.1f} min",
        )
    return table


def bench(
    generator: Annotated[
        list[str] | None,
        typer.Option("--generator", help="Generator plugin to measure (repeatable; default: every 3D one and image)."),
    ] = None,
    guidance: Annotated[str, typer.Option(help="Guidance plugin (default: shapes, the offline prior).")] = "shapes",
    loss: Annotated[str | None, typer.Option(help="Distillation loss plugin (default: sds).")] = None,
    preset: Annotated[str, typer.Option(help="paper, paper-cpu or draft: the sizes measured.")] = "draft",
    steps: Annotated[int, typer.Option(help="Timed steps per generator (averaged).")] = 3,
    warmup: Annotated[int, typer.Option(help="Untimed steps first (compilation happens here).")] = 1,
    start_step: Annotated[int, typer.Option(help="The loop's step counter (shading and anneals).")] = 1000,
    prompt: Annotated[str, typer.Option(help="The prompt every generator is measured on.")] = "a red cube",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    config: Annotated[Path | None, typer.Option(help="Config file applied to every generator.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key.path=value for every generator.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the stored result (JSON) here.")] = None,
) -> None:
    """Measure each generator's SDS step against the prior's own cost on this machine."""
    from sds_cli.errors import user_errors

    with user_errors():
        from rich.console import Console

        from sds_cli.commands.evaluate import check_outputs
        from sds_cli.options import command_overrides

        check_outputs(json_path, steps=(steps, 1), warmup=(warmup, 0))
        overrides = command_overrides(config, set_, None, None)
        import torch

        from sds_cli.bench import BenchCase, measure, record
        from sds_core.loop import resolve_device
        from sds_core.plugins import load_catalog
        from sds_core.resolve import resolve_config

        catalog = load_catalog()
        installed = {spec.name for spec in catalog.registry("generator")}
        names = list(generator or [name for name in DEFAULT_GENERATORS if name in installed])
        for name in names:  # bad names or values fail before anything is built or timed
            resolve_config(catalog, preset, overrides, {"generator": name, "guidance": guidance, "loss": loss})
        torch_device = resolve_device(device)
        console = Console(soft_wrap=True)
        console.print(f"torch {torch.__version__} on {torch_device}, {torch.get_num_threads()} CPU threads")
        cache: dict[str, Any] = {}
        rows = []
        for name in names:
            rows.append(
                measure(
                    BenchCase(name, name, overrides),
                    guidance=guidance,
                    loss=loss,
                    preset=preset,
                    prompt=prompt,
                    device=torch_device,
                    steps=steps,
                    warmup=warmup,
                    start_step=start_step,
                    catalog=catalog,
                    cache=cache,
                )
            )
        console.print(bench_table(rows))
        if json_path is not None:
            import json

            from sds_core.files import atomic_write

            command = ["sds", "bench", *(arg for name in names for arg in ("--generator", name))]
            command += ["--guidance", guidance, *(["--loss", loss] if loss else []), "--preset", preset]
            command += ["--steps", str(steps), "--warmup", str(warmup), "--start-step", str(start_step)]
            command += ["--prompt", prompt, "--device", device, *(["--config", str(config)] if config else [])]
            command += [*(arg for item in set_ or [] for arg in ("--set", item)), "--json", str(json_path)]
            result = record(command, torch_device, rows)
            atomic_write(json_path, (json.dumps(result, indent=1) + "\n").encode("utf-8"))
            console.print(f"result written to {json_path}")
