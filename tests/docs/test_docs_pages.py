"""The docs site's generated pages (docs/gen_pages.py) follow the code: a new commented field of a
plugin's config appears on the options page, the CLI page lists every command of the app, a stored
benchmark result renders its rows. MkDocs is not needed: only the generator functions are imported."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from sds_core.api import PluginSpec, hookimpl
from sds_core.plugins import load_catalog

ROOT = Path(__file__).resolve().parents[2]


def _load_gen_pages():
    spec = importlib.util.spec_from_file_location("sds_docs_gen_pages", ROOT / "docs" / "gen_pages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_pages = _load_gen_pages()


@dataclass
class WidgetConfig:
    size: int = 8  # cells per side of the widget


@dataclass
class WidgetConfigGrown:
    size: int = 8  # cells per side of the widget
    # how far the widget wobbles, in cells
    wobble: float = 0.25


def _catalog(config: type):
    class WidgetPlugin:
        @hookimpl
        def sds_register_generators(self, registry):
            registry.add(PluginSpec("docs-widget", "tests.docs:missing", config, "A throwaway generator."))

    return load_catalog(extra_plugins={"docs-widget-plugin": (WidgetPlugin(), "sds-docs-tests", "0")})


def _section(page: str, title: str) -> str:
    start = page.index(f"### `{title}`")
    end = page.find("\n### ", start + 1)
    return page[start : end if end != -1 else None]


def test_a_new_commented_field_appears_on_the_options_page():
    before = _section(gen_pages.options_page(_catalog(WidgetConfig)), "docs-widget")
    after = _section(gen_pages.options_page(_catalog(WidgetConfigGrown)), "docs-widget")
    assert "cells per side of the widget" in before and "A throwaway generator." in before
    assert "wobble" not in before
    assert "| `wobble` | float | `0.25` | how far the widget wobbles, in cells |" in after
    assert before != after


def test_the_options_page_covers_the_core_sections_and_every_installed_plugin():
    catalog = load_catalog()
    page = gen_pages.options_page(catalog)
    for section in ("cameras", "optim", "run"):
        assert f"### `{section}`" in page
    for kind in ("generator", "guidance", "loss"):
        for spec in catalog.registry(kind):
            assert f"### `{spec.name}`" in page


def _registered(typer_app, prefix: str) -> list[str]:
    """The commands and groups registered on a Typer app, read from Typer's own records."""
    names = [f"{prefix} {c.name or c.callback.__name__.replace('_', '-')}" for c in typer_app.registered_commands]
    for group in typer_app.registered_groups:
        name = f"{prefix} {group.name or group.typer_instance.info.name}"
        names += [name, *_registered(group.typer_instance, name)]
    return names


def test_the_cli_page_lists_every_command_of_the_app():
    from sds_cli.app import app

    registered = _registered(app, "sds")
    assert {"sds generate", "sds resume", "sds export", "sds plugins show", "sds batch", "sds eval geometry"} <= set(
        registered
    )
    assert sorted(gen_pages.cli_commands(app)) == sorted(["sds", *registered])
    page = gen_pages.cli_page(app)
    for command in registered:
        assert f"## `{command}`" in page
    assert "`--set`" in page and "`PROMPT`" in page


def test_a_results_file_renders_its_rows(tmp_path: Path):
    record = {
        "command": ["python", "benchmarks/example.py", "--seed", "0"],
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "date": "2026-12-07T12:00:00+00:00",
        "machine": {"host": "box", "cpus": 2},
        "torch": "2.13.0+cpu",
        "device": "cpu",
        "rows": [{"object": "a red cube", "iou": 0.9625}, {"object": "a blue torus", "iou": 0.5, "note": "a|b"}],
    }
    (tmp_path / "example-draft.json").write_text(json.dumps(record))
    page = gen_pages.benchmarks_page(sorted(tmp_path.glob("*.json")))
    assert "## example-draft" in page
    assert "`python benchmarks/example.py --seed 0`; commit `0123456789ab`; date 2026-12-07" in page
    assert "host box, cpus 2" in page and "torch 2.13.0+cpu" in page and "device cpu" in page
    assert "| object | iou | note |" in page
    assert "| a red cube | 0.9625 |   |" in page
    assert "| a blue torus | 0.5 | a\\|b |" in page


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").glob("*.json")), ids=lambda p: p.stem)
def test_every_stored_result_renders(path: Path):
    page = gen_pages.benchmarks_page([path])
    assert f"## {path.stem}" in page and "(unreadable" not in page


def test_the_model_cards_are_included_unchanged():
    pages = gen_pages.model_card_pages()
    assert set(pages) >= {"reference/models/shapes-learned.md", "reference/models/shapes-learned-sd.md"}
    for name, text in pages.items():
        card = gen_pages.MODELS / Path(name).stem / "README.md"
        assert text.startswith(card.read_text())


def test_a_result_marker_becomes_the_stored_table_and_a_missing_one_fails(tmp_path: Path):
    record = {"command": ["python", "benchmarks/x.py"], "commit": "abc", "rows": [{"prompt": "a red cube", "iou": 0.5}]}
    (tmp_path / "x-draft.json").write_text(json.dumps(record))
    page = "Before.\n\n<!-- result x-draft columns=iou,prompt -->\n\nAfter."
    out = gen_pages.render_results(page, tmp_path, depth=1)
    assert "| iou | prompt |" in out and "| 0.5 | a red cube |" in out
    assert "(../reference/benchmarks.md#x-draft)" in out and "commit `abc`" in out
    assert out.startswith("Before.") and out.endswith("After.")
    with pytest.raises(ValueError, match="'missing'"):
        gen_pages.render_results("<!-- result missing -->", tmp_path)
    with pytest.raises(ValueError, match="no column chamfer"):
        gen_pages.render_results("<!-- result x-draft columns=chamfer -->", tmp_path)


def test_no_page_types_a_figure_table_by_hand():
    """A table of measured figures in a hand-written page is a stored result's marker, not typed
    digits: no table row with three decimals (the paper's constants, 0.02 or 0.75, have two), and
    none with two in the experiments page, which has no constants."""
    for page in (ROOT / "docs").glob("*.md"):
        decimal = re.compile(r"\d\.\d\d" if page.name == "experiments.md" else r"\d\.\d\d\d")
        lines = (re.sub(r"arXiv:\S+", "", line) for line in page.read_text().splitlines())  # ids, not figures
        rows = [line for line in lines if line.startswith("|") and decimal.search(line)]
        assert not rows, f"{page.name}: {rows[:2]}"
