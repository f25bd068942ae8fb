"""`sds plugins [--json]`: every installed generator, guidance and loss. Imports no torch."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table


def catalog_listing() -> dict[str, Any]:
    """{kind: [{name, package, version, description}], "failures": [...]} for what is installed."""
    from sds_core.plugins import KINDS, load_catalog

    catalog = load_catalog()
    listing: dict[str, Any] = {
        kind: [
            {"name": s.name, "package": s.provider, "version": s.version, "description": s.description}
            for s in catalog.registry(kind)
        ]
        for kind in KINDS
    }
    listing["failures"] = [{"name": f.name, "package": f.provider, "error": f.error} for f in catalog.failures]
    return listing


def plugins_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the installed plugins: generators, guidance backends and losses."""
    from sds_cli.errors import user_errors

    with user_errors():
        listing = catalog_listing()
    if as_json:
        typer.echo(json.dumps(listing, indent=2))
        return
    console = Console()
    table = Table(title="sds plugins")
    for column in ("kind", "name", "package", "version", "description"):
        table.add_column(column, overflow="fold")
    for kind in ("generator", "guidance", "loss"):
        for item in listing[kind]:
            table.add_row(kind, item["name"], item["package"], item["version"], item["description"])
    console.print(table)
    for failure in listing["failures"]:
        console.print(
            f"[yellow]plugin {failure['name']!r} ({failure['package']}) failed to load:[/] {failure['error']}"
        )
