"""The generated pages of the docs site, as Markdown strings (no MkDocs needed here):

- `cli_page(app)`: every command of the Typer app, its usage, arguments and options, walked from
  the click command tree Typer builds;
- `options_page(catalog)`: the core's config sections and every installed plugin's options, from
  their config dataclasses through `sds_core.option_docs.option_docs` (what `sds plugins show` prints);
- `benchmarks_page(paths)`: one table per stored result (`benchmarks/results/*.json`) with its
  provenance line;
- `model_card_pages(models)`: the learned priors' model cards, included as they are;
- `render_results(markdown)`: a hand-written page's `<!-- result NAME columns=... -->` markers
  replaced by the stored result's table, so that prose cites figures and never types them.

`docs/hooks.py` hands them to MkDocs in memory (`mkdocs build` alone works);
`python docs/gen_pages.py OUT` writes them into OUT to read them without MkDocs.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ROOT / "packages" / "sds-shapes-learned" / "src" / "sds_shapes_learned" / "models"
GENERATED = "Generated from the code by `docs/gen_pages.py`; do not edit."


def cell(value: object) -> str:
    """One Markdown table cell: pipes escaped, newlines folded."""
    text = value if isinstance(value, str) else json.dumps(value) if not isinstance(value, float) else f"{value:.4g}"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip() or " "


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# --- the CLI ---------------------------------------------------------------------------------


def _commands(command: Any, path: tuple[str, ...]) -> Iterable[tuple[tuple[str, ...], Any]]:
    """(full name, click command) for `command` and every subcommand below it, depth first."""
    yield path, command
    for name in sorted(getattr(command, "commands", {}) or {}):
        yield from _commands(command.commands[name], (*path, name))


def cli_commands(app: Any) -> list[str]:
    """The full names of every command of the Typer app ("sds generate", "sds eval geometry", ...)."""
    import typer.main

    root = typer.main.get_command(app)
    return [" ".join(path) for path, _ in _commands(root, (root.name or "sds",))]


def _param_row(param: Any, ctx: Any) -> list[str]:
    if param.param_type_name == "argument":
        name = param.name.upper()
    else:
        name = ", ".join([*param.opts, *param.secondary_opts])
    kind = "flag" if getattr(param, "is_flag", False) else param.display_type(ctx).strip("<>")
    default = param.default
    shown = "" if default is None or callable(default) or default == () else json.dumps(default, default=str)
    required = "yes" if param.required else ""
    return [f"`{name}`", kind, f"`{shown}`" if shown else "", required, getattr(param, "help", None) or ""]


def cli_page(app: Any) -> str:
    """The CLI reference: one section per command, from the click tree of the Typer app."""
    import typer.main

    root = typer.main.get_command(app)
    # the click Typer builds on (its own vendored copy in recent Typer releases)
    core = sys.modules[type(root).__mro__[1].__module__]
    name = root.name or "sds"
    out = ["# CLI reference", "", GENERATED + " Every command also prints this with `--help`.", ""]
    contexts: dict[tuple[str, ...], Any] = {}
    for path, command in _commands(root, (name,)):
        parent = contexts.get(path[:-1])
        ctx = core.Context(command, info_name=path[-1], parent=parent)
        contexts[path] = ctx
        full = " ".join(path)
        out += [f"## `{full}`", ""]
        helptext = (command.help or "").strip()
        if helptext:
            out += [helptext.split("\f")[0].strip(), ""]
        usage = " ".join(command.collect_usage_pieces(ctx))
        out += ["```", f"{ctx.command_path} {usage}".rstrip(), "```", ""]
        params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
        if params:
            rows = (_param_row(p, ctx) for p in params)
            out += [table(("parameter", "type", "default", "required", "what it does"), rows), ""]
        subcommands = sorted(getattr(command, "commands", {}) or {})
        if subcommands:
            out += ["Subcommands: " + ", ".join(f"`{full} {sub}`" for sub in subcommands) + ".", ""]
    return "\n".join(out)


# --- configuration and plugin options ------------------------------------------------------------


def _options_table(config: type) -> str:
    from sds_core.option_docs import option_docs

    rows = ((f"`{o.name}`", o.type, f"`{json.dumps(o.default)}`", o.doc) for o in option_docs(config))
    return table(("option", "type", "default", "what it does"), rows)


def options_page(catalog: Any) -> str:
    """The core sections and every plugin of `catalog` (a `sds_core.plugins.Catalog`), each option
    with its type, default and the comment beside its field in the source."""
    from sds_core.config import CORE_SECTIONS
    from sds_core.plugins import KINDS

    section = {"generator": "generator", "guidance": "guidance", "loss": "loss"}
    out = [
        "# Options",
        "",
        GENERATED + " The same tables as `sds plugins show NAME`, for every plugin installed where "
        "the site was built. Set one with `--set SECTION.OPTION=VALUE` or in a `--config` file; "
        "see [Configuration](../configuration.md) for how values are merged.",
        "",
        "## Core sections",
        "",
    ]
    for name, config in CORE_SECTIONS.items():
        out += [f"### `{name}`", ""]
        doc = (config.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        out += [doc, "", f"`--set {name}.OPTION=VALUE`", "", _options_table(config), ""]
    titles = {"generator": "Generators", "guidance": "Guidance backends (priors)", "loss": "Losses"}
    for kind in KINDS:
        out += [f"## {titles.get(kind, kind)}", ""]
        for spec in sorted(catalog.registry(kind), key=lambda s: s.name):
            out += [f"### `{spec.name}`", ""]
            provider = f" ({spec.provider} {spec.version})".replace(" )", ")") if spec.provider else ""
            out += [f"{spec.description}{provider}", ""]
            presets = sorted(spec.presets) if spec.presets else []
            line = f"`--{kind} {spec.name}`, `--set {section[kind]}.OPTION=VALUE`"
            if presets:
                line += "; presets of its own: " + ", ".join(f"`{p}`" for p in presets)
            out += [line, "", _options_table(spec.config), ""]
    failures = list(getattr(catalog, "failures", []))
    if failures:
        out += ["## Plugins that failed to load", ""]
        out += [f"- `{f.name}` ({f.provider}): {f.error}" for f in failures] + [""]
    return "\n".join(out)


# --- benchmark results ---------------------------------------------------------------------------


def provenance(record: Mapping[str, Any]) -> str:
    """One line: the command, commit, date, machine, torch and device of a stored result."""
    command = record.get("command")
    if isinstance(command, list):
        command = shlex.join(str(part) for part in command)
    machine = record.get("machine")
    if isinstance(machine, Mapping):
        machine = ", ".join(f"{k} {v}" for k, v in machine.items())
    parts = [f"`{command}`" if command else None]
    commit = record.get("commit")
    parts.append(f"commit `{str(commit)[:12]}`" if commit else None)
    for key in ("date", "machine", "torch", "device"):
        value = machine if key == "machine" else record.get(key)
        if value:
            parts.append(f"{key} {value}")
    return "; ".join(p for p in parts if p)


def result_section(name: str, record: Mapping[str, Any]) -> str:
    """A stored result as a section: its provenance and a table of its rows (one column per key in
    the order first seen; with more than ten keys, one column per row instead)."""
    rows = [r for r in record.get("rows", []) if isinstance(r, Mapping)]
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    out = [f"## {name}", "", provenance(record) or "(no provenance recorded)", ""]
    if not rows:
        out += ["(no rows)", ""]
    elif len(keys) > 10:
        header = ["", *(f"row {i + 1}" for i in range(len(rows)))]
        out += [table(header, ([k, *(row.get(k, "") for row in rows)] for k in keys)), ""]
    else:
        out += [table(keys, ([row.get(k, "") for k in keys] for row in rows)), ""]
    return "\n".join(out)


# `<!-- result NAME -->` or `<!-- result NAME columns=a,b,c -->` in a page: the stored result
# benchmarks/results/NAME.json as a table (those columns, in that order), with its provenance
RESULT_MARKER = re.compile(r"<!--\s*result\s+([\w.-]+)(?:\s+columns=([\w.,-]+))?\s*-->")


def result_table(name: str, columns: Sequence[str] | None = None, results: Path = RESULTS, up: str = "") -> str:
    """The stored result NAME as a Markdown table and a provenance line; ValueError when it is not
    stored or lacks a column asked for (the docs build fails: a page never cites a missing figure)."""
    path = Path(results) / f"{name}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"the page cites the stored result {name!r}, which cannot be read: {exc}") from exc
    rows = [r for r in record.get("rows", []) if isinstance(r, Mapping)]
    keys = list(columns) if columns else list(dict.fromkeys(k for row in rows for k in row))
    missing = [k for k in keys if not any(k in row for row in rows)]
    if not rows or missing:
        raise ValueError(f"the stored result {name!r} has no rows or no column {', '.join(missing)}")
    body = table(keys, ([row.get(k, "") for k in keys] for row in rows))
    where = f"[`{name}`]({up}reference/benchmarks.md#{name.lower().replace('.', '')})"
    return f"{body}\n\n*Stored result {where}: {provenance(record)}.*\n"


def render_results(markdown: str, results: Path = RESULTS, depth: int = 0) -> str:
    """Every result marker of a page replaced by its table (`depth`: the page's folders below docs/,
    for the link to the benchmarks page)."""

    def replace(match: re.Match[str]) -> str:
        columns = match.group(2).split(",") if match.group(2) else None
        return result_table(match.group(1), columns, results, "../" * depth)

    return RESULT_MARKER.sub(replace, markdown)


def benchmarks_page(paths: Iterable[Path]) -> str:
    out = [
        "# Benchmark results",
        "",
        GENERATED + " One section per file of `benchmarks/results/`, named by the file: what was "
        "run, on which commit, when, on which machine, and its rows. Prose elsewhere in these docs "
        "refers to a result by that name.",
        "",
    ]
    paths = sorted(paths)
    if not paths:
        out += ["No results are stored yet.", ""]
    for path in paths:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            out += [f"## {Path(path).stem}", "", f"(unreadable: {exc})", ""]
            continue
        out.append(result_section(Path(path).stem, record if isinstance(record, Mapping) else {"rows": record}))
    return "\n".join(out)


# --- model cards --------------------------------------------------------------------------------


def model_card_pages(models: Path = MODELS) -> dict[str, str]:
    """{"reference/models/NAME.md": the card} for every shipped model folder with a README.md."""
    pages = {}
    for card in sorted(Path(models).glob("*/README.md")):
        name = card.parent.name
        where = f"packages/sds-shapes-learned/src/sds_shapes_learned/models/{name}/README.md"
        note = f"\n\n*The model card shipped with the weights, included from `{where}`.*\n"
        pages[f"reference/models/{name}.md"] = card.read_text() + note
    return pages


# --- all of them -------------------------------------------------------------------------------


def pages(catalog: Any = None, app: Any = None, results: Path = RESULTS, models: Path = MODELS) -> dict[str, str]:
    """Every generated page, by its path under docs/."""
    if catalog is None:
        from sds_core.plugins import load_catalog

        catalog = load_catalog()
    if app is None:
        from sds_cli.app import app
    return {
        "reference/cli.md": cli_page(app),
        "reference/options.md": options_page(catalog),
        "reference/benchmarks.md": benchmarks_page(Path(results).glob("*.json")),
        **model_card_pages(models),
    }


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python docs/gen_pages.py OUT_FOLDER")
    out = Path(argv[0])
    for name, text in pages().items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
        print(out / name)


if __name__ == "__main__":
    main(sys.argv[1:])
