"""Config trees: --set parsing, validation, presets and their order."""

from __future__ import annotations

import json

import pytest

from sds_core.config import CameraConfig, build_config, load_config_file, parse_sets
from sds_core.errors import ConfigError
from sds_core.resolve import resolve_config

NAMES = {"generator": "image", "guidance": "target"}


def test_parse_sets_builds_a_tree_with_typed_values() -> None:
    tree = parse_sets(["run.steps=10", "loss.guidance_scale=7.5", "guidance.model=/w/sd", "loss.grad_clip=null"])
    assert tree == {
        "run": {"steps": 10},
        "loss": {"guidance_scale": 7.5, "grad_clip": None},
        "guidance": {"model": "/w/sd"},
    }
    assert parse_sets(["cameras.distance_range=[1, 2]"]) == {"cameras": {"distance_range": [1, 2]}}
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        parse_sets(["run.steps"])
    with pytest.raises(ConfigError, match="must be one of"):
        parse_sets(["training.steps=3"])


def test_build_config_rejects_unknown_keys_and_bad_values() -> None:
    cfg = build_config(CameraConfig, {"width": 32, "distance_range": [1, 2]}, "cameras")
    assert cfg.width == 32 and cfg.distance_range == (1.0, 2.0)
    with pytest.raises(ConfigError, match=r"unknown option cameras\.widht; cameras accepts: .*width"):
        build_config(CameraConfig, {"widht": 3}, "cameras")
    with pytest.raises(ConfigError, match=r"cameras\.width must be a whole number"):
        build_config(CameraConfig, {"width": "big"}, "cameras")


def test_presets_order_core_then_plugins_then_user(catalog) -> None:
    paper = resolve_config(catalog, "paper", names=NAMES)
    assert paper.optim.schedule == "constant" and paper.optim.lr == 0.03  # the image generator's own default
    assert paper.cameras.width == 64  # A.2
    draft = resolve_config(catalog, "draft", names=NAMES)
    assert draft.run.steps == 300 and draft.cameras.width == 32
    user = resolve_config(catalog, "draft", overrides={"run": {"steps": 7}}, names=NAMES)
    assert user.run.steps == 7
    assert user.tree["generator"]["name"] == "image" and user.tree["loss"]["name"] == "sds"
    with pytest.raises(ConfigError, match="unknown preset 'fast'; available: paper, paper-cpu, draft"):
        resolve_config(catalog, "fast", names=NAMES)


def test_names_come_from_overrides_when_not_explicit(catalog) -> None:
    resolved = resolve_config(catalog, overrides={"generator": {"name": "image"}, "guidance": {"name": "target"}})
    assert resolved.specs["guidance"].name == "target"


def test_config_file_sections_are_checked(tmp_path) -> None:
    good = tmp_path / "c.json"
    good.write_text(json.dumps({"run": {"steps": 5}}))
    assert load_config_file(good) == {"run": {"steps": 5}}
    toml = tmp_path / "c.toml"
    toml.write_text("[loss]\nguidance_scale = 20.0\n")
    assert load_config_file(toml) == {"loss": {"guidance_scale": 20.0}}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"trainer": {}}))
    with pytest.raises(ConfigError, match="unknown sections"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.json")


def test_core_names_no_generator_or_guidance_of_its_own(catalog) -> None:
    """The default generator and guidance are the application's (sds-cli's `defaults`)."""
    with pytest.raises(ConfigError, match="no generator is named"):
        resolve_config(catalog, names={"guidance": "target"})
    resolved = resolve_config(catalog, names={"guidance": "target"}, defaults={"generator": "image"})
    assert resolved.specs["generator"].name == "image" and resolved.specs["loss"].name == "sds"
    # a name in the config beats the caller's default
    overrides = {"generator": {"name": "image"}}
    named = resolve_config(catalog, overrides=overrides, names={"guidance": "target"}, defaults={"generator": "x"})
    assert named.specs["generator"].name == "image"
