"""`sds plugins [--json]`: every installed generator, guidance and loss; `sds plugins show NAME`:
one plugin's options. Imports no torch."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sds_cli.text import printable, shown


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


_TITLES = {"generator": "generators", "guidance": "guidance", "loss": "losses"}


def listing_table(kind: str, items: list[dict[str, Any]], width: int) -> Table:
    """One kind's plugins: name, package and version whole, the description cut (with an ellipsis)
    to the width left, so that a plugin is one line at 80 columns (`sds plugins show` has it all)."""
    from rich import box

    table = Table(title=_TITLES.get(kind, kind), title_justify="left", box=box.SIMPLE_HEAD)
    widths = [max([len(key), *(len(printable(item[key])) for item in items)]) for key in ("name", "package", "version")]
    for column, column_width in zip(("name", "package", "version"), widths, strict=True):
        table.add_column(column, no_wrap=True, min_width=column_width)
    # the edges and a space each side of every cell: 2 + 3 * 3 + 2 columns of the 4 cells' own
    left = width - sum(widths) - 13
    table.add_column("description", no_wrap=True, overflow="ellipsis", max_width=max(left, 12))
    for item in items:
        table.add_row(*(shown(item[key]) for key in ("name", "package", "version", "description")))
    return table


def recipe_rows(recipes: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[tuple[str, str, str]]:
    """(generator, preset, "section.option=value") for every value of a guidance's recipes."""
    from sds_core.resolve import leaf_items

    return [
        (generator, preset, f"{path}={json.dumps(value)}")
        for generator, by_preset in recipes.items()
        for preset, patch in by_preset.items()
        for path, value in leaf_items(patch)
    ]


plugins_app = typer.Typer(no_args_is_help=False, add_completion=False)


@plugins_app.callback(invoke_without_command=True)
def plugins_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the installed plugins: generators, guidance backends and losses (`show NAME`: its options)."""
    from sds_cli.errors import user_errors

    if ctx.invoked_subcommand is not None:
        return
    with user_errors():
        listing = catalog_listing()
    if as_json:
        typer.echo(json.dumps(listing, indent=2))
        return
    console = Console()
    for kind in ("generator", "guidance", "loss"):
        console.print(listing_table(kind, listing[kind], console.width))
    console.print("`sds plugins show NAME`: a plugin's full description, options and recipes.")
    for failure in listing["failures"]:
        console.print(
            f"[yellow]plugin {shown(repr(failure['name']))} ({shown(failure['package'])}) failed to load:[/] "
            f"{shown(failure['error'])}"
        )


@plugins_app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="A plugin's name, e.g. nerf, shapes, sds.")],
    kind: Annotated[
        str | None, typer.Option("--kind", help="generator, guidance or loss, where a name is taken by two kinds.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """One plugin's options (`--set SECTION.OPTION=VALUE`): type, default and what each does."""
    from dataclasses import asdict

    from sds_cli.errors import user_errors
    from sds_core.errors import SdsError
    from sds_core.option_docs import option_docs
    from sds_core.plugins import KINDS, load_catalog

    with user_errors():
        catalog = load_catalog()
        kinds = [k for k in KINDS if kind in (None, k) and name in catalog.registry(k).names()]
        if kind is not None and kind not in KINDS:
            raise SdsError(f"unknown --kind {kind!r}; accepted: {', '.join(KINDS)}")
        if not kinds:
            raise SdsError(f"no plugin named {name!r} is installed; `sds plugins` lists them")
        if len(kinds) > 1:
            raise SdsError(f"{name!r} is a {' and a '.join(kinds)}; pass --kind")
        spec = catalog.get(kinds[0], name)
        options = option_docs(spec.config)
    section = {"generator": "generator", "guidance": "guidance", "loss": "loss"}[kinds[0]]
    if as_json:
        info = {"kind": kinds[0], "name": name, "package": spec.provider, "description": spec.description}
        recipes = {"recipes": spec.recipes} if spec.recipes else {}
        typer.echo(json.dumps({**info, "options": [asdict(o) for o in options], **recipes}, indent=2))
        return
    table = Table(title=f"{kinds[0]} {shown(name)} ({shown(spec.provider)}): --set {section}.OPTION=VALUE")
    for column in ("option", "type", "default", "what it does"):
        table.add_column(column, overflow="fold")
    for option in options:
        table.add_row(*(shown(text) for text in (option.name, option.type, json.dumps(option.default), option.doc)))
    console = Console()
    console.print(shown(spec.description))
    console.print(table)
    if spec.recipes:
        console.print(recipes_table(name, spec.recipes))


def recipes_table(name: str, recipes: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Table:
    """The settings a guidance applies with a generator and preset (a config file and --set win)."""
    title = f"recipes: applied with --guidance {shown(name)} and this generator and preset; --set wins"
    table = Table(title=title)
    for column in ("generator", "preset", "sets"):
        table.add_column(column, overflow="fold")
    for row in recipe_rows(recipes):
        table.add_row(*(shown(text) for text in row))
    return table
