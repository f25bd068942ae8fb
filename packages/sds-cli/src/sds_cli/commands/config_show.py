"""`sds config`: the resolved config tree of a command line, and where each value came from (a
default, sds-core's preset, a plugin's preset, the config file, --set, --steps / --seed). Builds no
model: only the plugins' registrations and config dataclasses are read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sds_cli.defaults import DEFAULT_NAMES, DEFAULT_PRESET


def config_rows(tree: dict[str, Any], sources: dict[str, str]) -> list[tuple[str, Any, str]]:
    """(dotted path, value, source) for every value of the resolved tree, in its order."""
    from sds_core.resolve import leaf_items, source_of

    return [(path, value, source_of(sources, path)) for path, value in leaf_items(tree)]


def config_command(
    generator: Annotated[str | None, typer.Option(help="Generator plugin (default: nerf).")] = None,
    guidance: Annotated[str | None, typer.Option(help="Guidance plugin (default: shapes).")] = None,
    loss: Annotated[str | None, typer.Option(help="Distillation loss plugin (default: sds).")] = None,
    preset: Annotated[str | None, typer.Option(help="paper, paper-cpu or draft (default: paper).")] = None,
    config: Annotated[Path | None, typer.Option(help="Config file (JSON, TOML or YAML) of sections.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key.path=value (repeatable).")] = None,
    steps: Annotated[int | None, typer.Option(help="run.steps, as `sds generate --steps`.")] = None,
    seed: Annotated[int | None, typer.Option(help="run.seed, as `sds generate --seed`.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print {config, sources} as JSON.")] = False,
) -> None:
    """Print the config `sds generate` would run with these options, and where each value comes from."""
    from sds_cli.errors import user_errors

    with user_errors():
        from rich import box
        from rich.console import Console
        from rich.table import Table

        from sds_cli.text import shown
        from sds_core.config import load_config_file, parse_sets
        from sds_core.plugins import load_catalog
        from sds_core.resolve import resolve_config

        layers: list[tuple[str, dict[str, Any]]] = []
        if config is not None:
            layers.append((str(config), load_config_file(config)))
        if set_:
            layers.append(("--set", parse_sets(set_)))
        flags = {k: v for k, v in (("steps", steps), ("seed", seed)) if v is not None}
        if flags:
            layers.append(("--" + " / --".join(flags), {"run": flags}))
        names = {"generator": generator, "guidance": guidance, "loss": loss}
        chosen = preset or DEFAULT_PRESET
        resolved = resolve_config(load_catalog(), chosen, None, names, DEFAULT_NAMES, layers=layers)
        rows = config_rows(resolved.tree, resolved.sources)
        if as_json:
            typer.echo(json.dumps({"preset": chosen, "config": resolved.tree, "sources": {p: s for p, _, s in rows}}))
            return
        table = Table(title=f"sds config (preset {chosen})", box=box.SIMPLE_HEAD)
        table.add_column("option", no_wrap=True)
        table.add_column("value", overflow="fold")
        table.add_column("from", no_wrap=True)
        for path, value, source in rows:
            table.add_row(shown(path), shown(json.dumps(value)), shown(source))
        Console(soft_wrap=True).print(table)
