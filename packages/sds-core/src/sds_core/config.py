"""Typed configs, presets and `--set key.path=value` parsing.

A run's config is one tree with the sections `generator`, `guidance`, `loss`, `cameras`, `optim`
and `run`. Each section is validated against a dataclass whose defaults follow DreamFusion; the
plugin sections also carry `name`, the plugin that reads them. No torch here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from sds_core.errors import ConfigError
from sds_core.limits import MAX_CONFIG_DEPTH, nesting_depth, shown

T = TypeVar("T")
SECTIONS = ("generator", "guidance", "loss", "cameras", "optim", "run")
PRESETS = ("paper", "paper-cpu", "draft")


# --- the core's own sections -------------------------------------------------------------------


@dataclass
class CameraConfig:
    """Camera and light sampling, DreamFusion Appendix A.2."""

    width: int = 64  # A.2: renders are 64 x 64
    height: int = 64
    batch_size: int = 1  # A.2 trains at batch 4 (one view per TPU chip); 1 fits one GPU or CPU
    elevation_range: tuple[float, float] = (-10.0, 90.0)  # A.2, degrees
    # A.2: half of the elevations uniform in angle, half uniform in area on the sphere
    area_uniform_fraction: float = 0.5
    azimuth_range: tuple[float, float] = (0.0, 360.0)  # A.2
    distance_range: tuple[float, float] = (1.0, 1.5)  # A.2
    focal_range: tuple[float, float] = (0.7, 1.35)  # A.2: multiplier of the image width
    position_jitter: float = 0.1  # A.2: camera position += U(-0.1, 0.1)^3
    target_std: float = 0.2  # A.2: look-at point ~ N(0, 0.2 I) (read as a std, as open ports do)
    up_std: float = 0.02  # A.2: up vector + N(0, 0.02 I)
    light_std: float = 1.0  # A.2: light direction ~ N(camera position, I)
    light_distance_range: tuple[float, float] = (0.8, 1.5)  # A.2
    # §3.2 view-dependent prompts: overhead above 60 deg; front / side / back by azimuth
    overhead_elevation: float = 60.0
    front_half_angle: float = 45.0
    back_half_angle: float = 45.0
    # multi-view steps (MVDream, Shi et al. 2024): each object of the batch is seen by this many
    # views that share elevation, distance, focal and a random start azimuth; batch_size must be
    # a multiple of it. 1: every camera drawn on its own (A.2)
    views_per_object: int = 1
    # the views' azimuths relative to the object's start, degrees, one per view; None: evenly
    # spaced, 360 / views_per_object apart (MVDream's 4 views: 0, 90, 180, 270)
    relative_azimuths: tuple[float, ...] | None = None


@dataclass
class OptimConfig:
    """The optimiser and learning-rate schedule.

    DreamFusion (A.2) uses Distributed Shampoo with lr warmed up from 1e-9 to 1e-4 over 3k steps,
    then cosine decay to 1e-6. Adam is the usual open substitute (a documented deviation).
    """

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15
    weight_decay: float = 0.0
    schedule: Literal["constant", "warmup_cosine"] = "constant"
    warmup_steps: int = 3000  # A.2
    lr_init: float = 1e-9  # A.2: warm-up start
    lr_final: float = 1e-6  # A.2: cosine end


@dataclass
class RunConfig:
    """Length, seed and what the loop writes."""

    steps: int = 15000  # A.2: 15,000 iterations
    seed: int = 0
    log_every: int = 1
    preview_every: int = 500
    preview_views: int = 4
    checkpoint_every: int = 500
    keep_every: int = 0  # also keep ckpts/step-NNNNNN.pt every N steps (0: only last.pt)


CORE_SECTIONS: dict[str, type] = {"cameras": CameraConfig, "optim": OptimConfig, "run": RunConfig}

# the length of a `paper-cpu` run (A.2: 15,000 steps); generators keep their schedules at the
# paper's fractions of it; and the side of its renders and references (A.2: 64 px)
PAPER_CPU_STEPS = 300
PAPER_CPU_SIDE = 16

# What each preset means for the core; plugins add what it means for them.
CORE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "optim": {"schedule": "warmup_cosine", "lr": 1e-4},
        "run": {"steps": 15000},
        "cameras": {"width": 64, "height": 64},
    },
    # The paper's settings sized for a 2-core CPU: PAPER_CPU_STEPS steps (A.2: 15,000) with the
    # warm-up at the paper's fraction (3k of 15k), PAPER_CPU_SIDE-pixel renders (A.2: 64 x 64); a
    # generator's own "paper-cpu" preset sets its schedule lengths and learning rate.
    "paper-cpu": {
        "optim": {"schedule": "warmup_cosine", "lr": 1e-4, "warmup_steps": PAPER_CPU_STEPS // 5},
        "run": {"steps": PAPER_CPU_STEPS, "preview_every": 100, "checkpoint_every": 100},
        "cameras": {"width": PAPER_CPU_SIDE, "height": PAPER_CPU_SIDE},
    },
    "draft": {
        "optim": {"schedule": "constant"},
        "run": {"steps": 300, "preview_every": 100, "checkpoint_every": 100},
        "cameras": {"width": 32, "height": 32},
    },
}


# --- generic helpers --------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any], _depth: int = 1) -> dict[str, Any]:
    """A new dict: `update` merged into `base`, recursing into nested mappings (at most
    MAX_CONFIG_DEPTH levels: deeper is a ConfigError, never a RecursionError)."""
    if _depth > MAX_CONFIG_DEPTH:
        raise ConfigError(f"the config is nested deeper than {MAX_CONFIG_DEPTH} levels; an sds config has a few")
    out: dict[str, Any] = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value, _depth + 1)
        else:
            out[key] = value
    return out


_TOO_DEEP = object()  # what parse_value marks a value too deep for json's own recursion with


def parse_value(text: str) -> Any:
    """A --set value: JSON when it parses (numbers, booleans, null, lists), else the plain string.

    JSON nested deeper than MAX_CONFIG_DEPTH levels is a ConfigError (json's own recursion limit
    would otherwise end in a RecursionError)."""
    try:
        value = json.loads(text)
    except RecursionError:
        value = _TOO_DEEP
    except json.JSONDecodeError:
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered in ("none", "null"):
            return None
        return text
    if value is _TOO_DEEP or nesting_depth(value) > MAX_CONFIG_DEPTH:
        raise ConfigError(f"the value {shown(text, 40)} is nested deeper than {MAX_CONFIG_DEPTH} levels")
    return value


def parse_sets(items: list[str]) -> dict[str, Any]:
    """Turn ["a.b=1", "a.c=x"] into {"a": {"b": 1, "c": "x"}} (at most MAX_CONFIG_DEPTH levels)."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set takes key.path=value, got {shown(item, 40)}")
        parts = key.split(".")
        if parts[0] not in SECTIONS:
            raise ConfigError(
                f"--set {shown(key, 40)}: the first part must be one of {', '.join(SECTIONS)}, not {parts[0]!r}"
            )
        try:
            value = parse_value(raw)
        except ConfigError as exc:
            raise ConfigError(f"--set {shown(key, 40)}: {exc}") from None
        if len(parts) + nesting_depth(value) > MAX_CONFIG_DEPTH:
            raise ConfigError(f"--set {shown(key, 40)} is nested deeper than {MAX_CONFIG_DEPTH} levels")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {shown(key, 40)} conflicts with an earlier --set of {part}")
        node[parts[-1]] = value
    return tree


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a config tree from JSON, TOML or YAML (YAML needs PyYAML), at most MAX_CONFIG_DEPTH
    levels deep."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    too_deep = f"config file {path} is nested deeper than {MAX_CONFIG_DEPTH} levels; an sds config has a few"
    try:
        if path.suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError as exc:
                raise ConfigError(f"{path} is YAML; install PyYAML or use JSON or TOML") from exc
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(too_deep) from None
    except Exception as exc:
        raise ConfigError(f"config file {path} could not be parsed: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    if nesting_depth(data) > MAX_CONFIG_DEPTH:
        raise ConfigError(too_deep)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"config file {path} has unknown sections {unknown}; accepted: {', '.join(SECTIONS)}")
    return data


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{path}: bad value {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{path} must be one of {', '.join(map(repr, choices))}, not {value!r}")
        return value
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list like [a, b], not {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], path) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{path} must have {len(args)} items, not {len(value)}")
        return tuple(_coerce(v, a, path) for v, a in zip(value, args, strict=True))
    if origin is list:
        (arg,) = get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, not {value!r}")
        return [_coerce(v, arg, path) for v in value]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping, not {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping, not {value!r}")
        return build_config(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path} must be true or false, not {value!r}")
    if tp is int:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or int(value) != value
        ):
            raise ConfigError(f"{path} must be a whole number, not {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, not {value!r}")
        if not math.isfinite(value):  # JSON's NaN and Infinity parse, and would train NaN
            raise ConfigError(f"{path} must be a finite number, not {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            return str(value)
        return value
    return value


def build_config(cls: type[T], data: Mapping[str, Any] | None, path: str) -> T:
    """Validate a mapping against the dataclass `cls`; unknown keys and bad values are errors."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown option {path}.{unknown[0]}; {path} accepts: {', '.join(sorted(fields))}")
    kwargs = {key: _coerce(value, hints[key], f"{path}.{key}") for key, value in data.items()}
    return cls(**kwargs)


def config_to_dict(obj: Any) -> Any:
    """A JSON-ready tree from (nested) config dataclasses."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
