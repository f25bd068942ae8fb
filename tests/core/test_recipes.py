"""A guidance's recipes: settings for the other sections by generator and preset, merged after
every plugin's presets and before the config file and --set, with their source recorded."""

from __future__ import annotations

import dataclasses

import pytest

from sds_core.errors import ConfigError, PluginError
from sds_core.hookspecs import hookimpl
from sds_core.plugins import PluginSpec, Registry, load_catalog
from sds_core.resolve import resolve_config
from tests.conftest import TargetConfig, TargetGuidance, TargetPlugin

RECIPES = {
    "image": {
        "default": {"optim": {"lr": 0.5}},
        "draft": {"run": {"steps": 42}, "optim": {"eps": 1e-6}, "loss": {"guidance_scale": 7.0}},
    },
    "nerf": {"draft": {"run": {"steps": 9}}},
}


class RecipePlugin:
    """`cooked`: the `target` guidance with recipes, and `cooked-derived`: derived with recipes."""

    @hookimpl
    def sds_register_guidance(self, registry: Registry) -> None:
        registry.add(PluginSpec("cooked", TargetGuidance, TargetConfig, "Target with recipes.", recipes=RECIPES))
        registry.derive("cooked-derived", "target", {"side": 4}, "Derived with recipes.", recipes=RECIPES)


@pytest.fixture
def recipe_catalog():
    plugins = {"target-plugin": (TargetPlugin(), "sds-tests", "0"), "recipes": (RecipePlugin(), "sds-tests", "0")}
    return load_catalog(extra_plugins=plugins)


def resolve(catalog, guidance: str, preset: str = "draft", **kwargs):
    names = {"generator": "image", "guidance": guidance, "loss": "sds"}
    return resolve_config(catalog, preset, names=names, **kwargs)


@pytest.mark.parametrize("guidance", ["cooked", "cooked-derived"])
def test_recipe_applies_with_its_generator_and_preset(recipe_catalog, guidance) -> None:
    resolved = resolve(recipe_catalog, guidance)
    # over the image generator's own draft preset (300 steps) and its default lr (0.03)
    assert resolved.run.steps == 42 and resolved.optim.lr == 0.5 and resolved.optim.eps == 1e-6
    assert resolved.tree["loss"]["guidance_scale"] == 7.0
    assert resolved.sources["run.steps"] == f"recipe of {guidance} (image, draft)"
    assert resolved.sources["optim.lr"] == f"recipe of {guidance} (image, every preset)"
    paper = resolve(recipe_catalog, guidance, preset="paper")
    assert paper.optim.lr == 0.5 and paper.run.steps == 1000  # the "default" part only
    assert paper.sources["run.steps"] == "image (for every preset)"


def test_recipe_loses_to_the_config_file_and_set(recipe_catalog) -> None:
    layers = [("run.json", {"run": {"steps": 5}, "optim": {"lr": 0.25}}), ("--set", {"optim": {"lr": 0.125}})]
    resolved = resolve(recipe_catalog, "cooked", layers=layers)
    assert resolved.run.steps == 5 and resolved.sources["run.steps"] == "run.json"
    assert resolved.optim.lr == 0.125 and resolved.sources["optim.lr"] == "--set"
    assert resolved.sources["optim.eps"] == "recipe of cooked (image, draft)"
    plain = resolve(recipe_catalog, "cooked", overrides={"run": {"steps": 3}})
    assert plain.run.steps == 3 and plain.optim.lr == 0.5


def test_recipe_is_absent_for_other_generators_and_other_guidance(recipe_catalog) -> None:
    spec = recipe_catalog.get("generator", "image")
    other = dataclasses.replace(spec, name="canvas")  # the image generator, by another name
    recipe_catalog.registry("generator").add(other)
    canvas = resolve_config(recipe_catalog, "draft", names={"generator": "canvas", "guidance": "cooked"})
    assert canvas.run.steps == 300 and canvas.optim.lr == 0.03  # the image preset, no recipe
    assert not any(source.startswith("recipe") for source in canvas.sources.values())
    target = resolve(recipe_catalog, "target")
    assert target.run.steps == 300 and target.optim.lr == 0.03
    assert not any(source.startswith("recipe") for source in target.sources.values())


def test_recipes_are_validated(recipe_catalog) -> None:
    registry = Registry("guidance")
    with pytest.raises(PluginError, match="not a mapping of sections"):
        registry.add(PluginSpec("bad", TargetGuidance, TargetConfig, "Bad.", recipes={"image": {"draft": {"run": 1}}}))
    with pytest.raises(PluginError, match="only a guidance component may"):
        Registry("loss").add(PluginSpec("bad", TargetGuidance, TargetConfig, "Bad.", recipes=RECIPES))
    odd = PluginSpec("odd", TargetGuidance, TargetConfig, "Odd.", recipes={"image": {"draft": {"widgets": {"a": 1}}}})
    recipe_catalog.registry("guidance").add(odd)
    with pytest.raises(ConfigError, match="unknown sections"):
        resolve(recipe_catalog, "odd")
    wrong = PluginSpec("wrong", TargetGuidance, TargetConfig, "Wrong.", recipes={"image": {"draft": {"run": {"x": 1}}}})
    recipe_catalog.registry("guidance").add(wrong)
    with pytest.raises(ConfigError):
        resolve(recipe_catalog, "wrong")  # validated as usual
