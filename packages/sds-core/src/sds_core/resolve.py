"""Resolving a run's config tree: names, presets, file, --set, then validation. No torch."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from sds_core.config import (
    CORE_PRESETS,
    CORE_SECTIONS,
    CameraConfig,
    OptimConfig,
    RunConfig,
    build_config,
    check_preset,
    config_to_dict,
    deep_merge,
)
from sds_core.errors import ConfigError
from sds_core.limits import MAX_CONFIG_DEPTH, check_config_sizes, check_depth, check_seed
from sds_core.plugins import Catalog, Kind, PluginSpec

# sds-core's own default: its built-in loss. The default generator and guidance are the
# application's choice (sds-cli passes them as `defaults`); a library caller names them.
DEFAULT_NAMES: dict[str, str] = {"loss": "sds"}
SECTION_KIND: dict[str, Kind] = {"generator": "generator", "guidance": "guidance", "loss": "loss"}


@dataclass
class ResolvedConfig:
    """A validated config: plugin specs and configs, the core sections, and the JSON tree."""

    preset: str
    specs: dict[str, PluginSpec]  # section -> spec
    plugin_configs: dict[str, Any]  # section -> the plugin's config dataclass
    cameras: CameraConfig
    optim: OptimConfig
    run: RunConfig
    tree: dict[str, Any]
    # dotted option path -> where its value came from ("default (nerf)", "preset draft", "--set", ...)
    sources: dict[str, str] = field(default_factory=dict)


def leaf_items(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of a tree's non-mapping values, in order (an empty mapping is a value)."""
    items: list[tuple[str, Any]] = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items.extend(leaf_items(value, path + "."))
        else:
            items.append((path, value))
    return items


def _record(sources: dict[str, str], patch: Mapping[str, Any], label: str) -> None:
    """Mark every value `patch` sets as coming from `label` (a value replaced by a mapping, or the
    reverse, drops what was recorded below or above it)."""
    for path, _ in leaf_items(patch):
        for known in [k for k in sources if k.startswith(path + ".") or path.startswith(k + ".")]:
            del sources[known]
        sources[path] = label


def source_of(sources: Mapping[str, str], path: str) -> str:
    """Where the value at `path` came from: its own record, else its nearest recorded parent."""
    while path:
        if path in sources:
            return sources[path]
        path = path.rpartition(".")[0]
    return "default"


def _name_for(section: str, explicit: str | None, overrides: Mapping[str, Any], defaults: Mapping[str, str]) -> str:
    """The plugin of a section: named explicitly, else in the config, else the caller's default."""
    if explicit:
        return explicit
    node = overrides.get(section)
    if isinstance(node, Mapping) and node.get("name"):
        return str(node["name"])
    name = defaults.get(section) or DEFAULT_NAMES.get(section)
    if not name:
        raise ConfigError(f"no {section} is named; pass one (e.g. --{section} NAME) or set {section}.name")
    return name


def resolve_config(
    catalog: Catalog,
    preset: str = "paper",
    overrides: Mapping[str, Any] | None = None,
    names: Mapping[str, str | None] | None = None,
    defaults: Mapping[str, str] | None = None,
    layers: Sequence[tuple[str, Mapping[str, Any]]] = (),
) -> ResolvedConfig:
    """Merge, lowest first: core defaults, core preset, then each plugin's "default" and preset
    overrides (loss, guidance, generator), then the guidance's recipe for the generator ("default",
    then the preset: `PluginSpec.recipes`), then `overrides` (config file and --set).

    A section's plugin is `names[section]`, else the config's `section.name`, else `defaults`.
    layers: the overrides as labelled parts, lowest first ((label, tree), e.g. the file, then
    --set), merged after `overrides`; the result's `sources` names each value's origin."""
    if layers:
        for _, layer in layers:
            check_depth(layer, "the config", MAX_CONFIG_DEPTH)
        overrides = deep_merge(overrides or {}, {})
        for _, layer in layers:
            overrides = deep_merge(overrides, layer)
    check_preset(preset)
    # a config file or a run folder's recorded config may come from someone else: bounded first
    check_depth(overrides or {}, "the config", MAX_CONFIG_DEPTH)
    overrides = dict(overrides or {})
    names = dict(names or {})
    specs = {
        section: catalog.get(kind, _name_for(section, names.get(section), overrides, defaults or {}))
        for section, kind in SECTION_KIND.items()
    }
    tree: dict[str, Any] = {section: config_to_dict(cls()) for section, cls in CORE_SECTIONS.items()}
    sources: dict[str, str] = {}
    _record(sources, tree, "default")
    for section, spec in specs.items():
        tree[section] = {"name": spec.name, **config_to_dict(spec.config())}
        _record(sources, {section: tree[section]}, f"default ({spec.name})")
    tree = deep_merge(tree, CORE_PRESETS.get(preset, {}))
    _record(sources, CORE_PRESETS.get(preset, {}), f"preset {preset}")
    for section in ("loss", "guidance", "generator"):
        spec = specs[section]
        for key in ("default", preset):
            patch = spec.presets.get(key, {})
            unknown = sorted(set(patch) - set(tree))
            if unknown:
                raise ConfigError(f"plugin {spec.name!r} has a preset for unknown sections {unknown}")
            tree = deep_merge(tree, patch)
            _record(sources, patch, f"{spec.name} ({'for every preset' if key == 'default' else 'preset ' + key})")
    tree = _apply_recipe(tree, sources, specs["guidance"], specs["generator"].name, preset)
    for section, value in overrides.items():
        if section not in tree:
            raise ConfigError(f"unknown config section {section!r}; accepted: {', '.join(tree)}")
        if not isinstance(value, Mapping):
            raise ConfigError(f"config section {section!r} must be a mapping")
    tree = deep_merge(tree, overrides)
    if layers:
        for label, layer in layers:
            _record(sources, layer, label)
    else:
        _record(sources, overrides, "overrides")
    for section, spec in specs.items():
        tree[section]["name"] = spec.name
        sources[f"{section}.name"] = "--" + section if names.get(section) else source_of(sources, f"{section}.name")

    plugin_configs: dict[str, Any] = {}
    for section, spec in specs.items():
        _drop_retired(tree[section], spec.retired, section)
        data = {k: v for k, v in tree[section].items() if k != "name"}
        plugin_configs[section] = build_config(spec.config, data, section)
    cameras = build_config(CameraConfig, tree["cameras"], "cameras")
    optim = build_config(OptimConfig, tree["optim"], "optim")
    run = build_config(RunConfig, tree["run"], "run")
    _check_values(cameras, run)
    _check_optim(optim)
    final_tree = {
        section: config_to_dict(cfg) for section, cfg in (("cameras", cameras), ("optim", optim), ("run", run))
    }
    for section, cfg in plugin_configs.items():
        final_tree[section] = {"name": specs[section].name, **config_to_dict(cfg)}
    ordered = {key: final_tree[key] for key in ("generator", "guidance", "loss", "cameras", "optim", "run")}
    check_config_sizes(ordered)  # image sides and grids, before any plugin allocates them
    return ResolvedConfig(preset, specs, plugin_configs, cameras, optim, run, ordered, sources)


def recipe_label(guidance: str, generator: str, key: str) -> str:
    """The source `sds config` shows for a value of a recipe: "recipe of G (nerf, draft)"."""
    return f"recipe of {guidance} ({generator}, {'every preset' if key == 'default' else key})"


def _apply_recipe(
    tree: dict[str, Any], sources: dict[str, str], guidance: PluginSpec, generator: str, preset: str
) -> dict[str, Any]:
    """Merge the guidance's recipe for `generator`: its "default", then `preset`."""
    recipe = guidance.recipes.get(generator, {})
    for key in ("default", preset):
        patch = recipe.get(key, {})
        unknown = sorted(set(patch) - set(tree))
        if unknown:
            raise ConfigError(f"the recipe of {guidance.name!r} for {generator} names unknown sections {unknown}")
        tree = deep_merge(tree, patch)
        _record(sources, patch, recipe_label(guidance.name, generator, key))
    return tree


def _drop_retired(section_tree: dict[str, Any], retired: Mapping[str, str], section: str) -> None:
    """Remove the options a plugin retired from its section, one deprecation line each."""
    for key in sorted(set(section_tree) & set(retired)):
        del section_tree[key]
        warnings.warn(f"{section}.{key} is deprecated and ignored: {retired[key]}", FutureWarning, stacklevel=3)


def _check_values(cameras: CameraConfig, run: RunConfig) -> None:
    if run.steps < 1:
        raise ConfigError(f"run.steps must be at least 1, not {run.steps}")
    for f in fields(RunConfig):
        value = getattr(run, f.name)
        if f.name != "seed" and isinstance(value, int) and value < 0:
            raise ConfigError(f"run.{f.name} must not be negative, not {value}")
    check_seed(run.seed, "run.seed")
    if cameras.width < 1 or cameras.height < 1 or cameras.batch_size < 1:
        raise ConfigError("cameras.width, cameras.height and cameras.batch_size must be at least 1")


def _check_optim(optim: OptimConfig) -> None:
    """Values the optimisers would take and train NaN with (or reject with a traceback)."""
    if not optim.lr > 0:
        raise ConfigError(f"optim.lr must be greater than 0, not {optim.lr}")
    if not all(0.0 <= beta < 1.0 for beta in optim.betas):
        raise ConfigError(f"optim.betas must both lie in [0, 1), not {list(optim.betas)}")
    if not optim.eps > 0:
        raise ConfigError(f"optim.eps must be greater than 0, not {optim.eps}")
    for name in ("weight_decay", "lr_init", "lr_final", "warmup_steps"):
        value = getattr(optim, name)
        if value < 0:
            raise ConfigError(f"optim.{name} must not be negative, not {value}")
