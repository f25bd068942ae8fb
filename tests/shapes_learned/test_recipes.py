"""The recipes `shapes-learned`, `shapes-learned-sd` and `shapes-learned-flow` ship: the nerf draft settings of their
model cards, applied when the model is chosen (resolve only: no model is built, nothing trains)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sds_shapes_learned")
pytest.importorskip("sds_guidance")
pytest.importorskip("sds_nerf")
pytest.importorskip("sds_cli")

from typer.testing import CliRunner

from sds_cli.app import app
from sds_cli.defaults import DEFAULT_NAMES
from sds_core.plugins import load_catalog
from sds_core.resolve import resolve_config
from sds_shapes_learned.plugin import SHAPES_LEARNED, SHAPES_LEARNED_FLOW, SHAPES_LEARNED_SD

# the cards' nerf commands (models/*/README.md): the draft preset with these options
CARD_OPTIONS = {"generator.blob": "magic3d", "optim.schedule": "warmup_cosine", "optim.warmup_steps": 0}
CARDS = {
    "shapes-learned": (SHAPES_LEARNED, {**CARD_OPTIONS, "optim.lr_final": 5e-4, "run.steps": 6000}),
    "shapes-learned-sd": (
        SHAPES_LEARNED_SD,
        {**CARD_OPTIONS, "optim.lr_final": 5e-4, "run.steps": 300, "loss.guidance_scale": 1000.0},
    ),
    "shapes-learned-flow": (
        SHAPES_LEARNED_FLOW,
        {**CARD_OPTIONS, "optim.lr_final": 5e-4, "run.steps": 300, "loss.guidance_scale": 30.0},
    ),
}


def value_at(tree: dict, path: str):
    section, key = path.split(".")
    return tree[section][key]


@pytest.mark.parametrize("guidance", sorted(CARDS))
def test_shipped_recipe_resolves_to_the_cards_command(guidance) -> None:
    folder, expected = CARDS[guidance]
    if not (folder / "model_index.json").is_file():
        pytest.skip(f"{guidance}'s weights are not shipped in this checkout")
    catalog = load_catalog()
    names = {"generator": "nerf", "guidance": guidance, "loss": None}
    resolved = resolve_config(catalog, "draft", None, names, DEFAULT_NAMES)
    for path, value in expected.items():
        assert value_at(resolved.tree, path) == value, path
        assert resolved.sources[path] == f"recipe of {guidance} (nerf, draft)"
    assert resolved.tree["guidance"]["model"] == str(folder)
    # the card's command line with every option spelled out gives the same tree
    sets = {}
    for path, value in expected.items():
        section, key = path.split(".")
        sets.setdefault(section, {})[key] = value
    assert resolve_config(catalog, "draft", sets, names, DEFAULT_NAMES).tree == resolved.tree
    # another generator, or another preset, gets none of it
    for generator, preset in (("mesh", "draft"), ("nerf", "paper")):
        other = resolve_config(catalog, preset, None, {**names, "generator": generator}, DEFAULT_NAMES)
        assert not any(source.startswith("recipe") for source in other.sources.values())


def test_recipe_shows_in_sds_config_and_loses_to_set() -> None:
    if not (SHAPES_LEARNED / "model_index.json").is_file():
        pytest.skip("shapes-learned's weights are not shipped in this checkout")
    args = ["config", "--guidance", "shapes-learned", "--preset", "draft", "--set", "optim.lr_final=1e-3"]
    result = CliRunner().invoke(app, [*args, "--steps", "7", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["sources"]["generator.blob"] == "recipe of shapes-learned (nerf, draft)"
    assert shown["config"]["generator"]["blob"] == "magic3d"
    assert shown["config"]["optim"]["lr_final"] == 1e-3 and shown["sources"]["optim.lr_final"] == "--set"
    assert shown["config"]["run"]["steps"] == 7 and shown["sources"]["run.steps"] == "--steps"
    table = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "recipe of shapes-learned (nerf, draft)" in table.output


def test_plugins_show_prints_the_recipes() -> None:
    if not (SHAPES_LEARNED_SD / "model_index.json").is_file():
        pytest.skip("shapes-learned-sd's weights are not shipped in this checkout")
    result = CliRunner().invoke(app, ["plugins", "show", "shapes-learned-sd"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "recipes" in result.output and "loss.guidance_scale=1000.0" in result.output
    assert "run.steps=300" in result.output and 'generator.blob="magic3d"' in result.output
    shown = json.loads(CliRunner().invoke(app, ["plugins", "show", "shapes-learned-sd", "--json"]).stdout)
    assert shown["recipes"]["nerf"]["draft"]["loss"]["guidance_scale"] == 1000.0
