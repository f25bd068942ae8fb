"""The public API for plugin packages: what a generator, guidance, loss or evaluation package
imports from sds-core, and the only sds-core module it imports (tests/core/test_package_graph.py).

Torch-free at import, so that a plugin's registration module can use it and `sds --help` stays
fast: the names of torch-free modules are imported here; those of modules that import torch
(shading, cameras, checkpoints, the tensor cache, images, the loop, `load_run`) are imported on
first use (PEP 562 `__getattr__`). Names outside this module may change between minor versions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sds_core.compiling import compile_enabled, compiled
from sds_core.config import PAPER_CPU_SIDE, PAPER_CPU_STEPS, CameraConfig, build_config
from sds_core.errors import ConfigError, PluginError, SdsError
from sds_core.files import atomic_write
from sds_core.hookspecs import hookimpl
from sds_core.limits import (
    EVAL_NODE_BYTES,
    MAX_EVAL_GRID_SIDE,
    MAX_EVAL_VIEWS,
    MAX_TEXTURE_SIDE,
    TEXEL_BYTES,
    check_grid_side,
    check_image_side,
)
from sds_core.options_3d import EXPORT_FORMATS, BackgroundOptions, ExportOptions, ShadingOptions
from sds_core.plugins import PluginSpec, Registry
from sds_core.prompts import VIEWS, cache_root, per_sample_prompts, split_view, view_prompt
from sds_core.protocols import (
    AdaptiveParameters,
    BuildContext,
    CameraBatch,
    DeclaresBackground,
    DensityField,
    DistillationLoss,
    ExportContext,
    Generator,
    GroundTruth,
    Guidance,
    GuidanceFacts,
    LossOutput,
    NegativePrompting,
    NoisePrediction,
    NoiseSchedule,
    OwnsSchedule,
    Render,
    ScheduledLearningRates,
    SurfaceMesh,
    TrainableCopy,
    TrainableLoss,
)
from sds_core.reference_options import ReferenceOptions
from sds_core.run import RunFolder

if TYPE_CHECKING:  # the lazy names below, for type checkers
    from sds_core.cache import TensorSpec
    from sds_core.cache import load as cache_load
    from sds_core.cache import save as cache_save
    from sds_core.cameras import CameraSampler
    from sds_core.checkpoint import load_plain
    from sds_core.imaging import to_uint8
    from sds_core.lifecycle import LoadedRun, load_run
    from sds_core.loop import resolve_device
    from sds_core.schedules import FlowSchedule, VPSchedule
    from sds_core.shading import SHADING_MODES, ShadingConfig, choose_shading, composite, shade

# name -> (module, attribute): the names whose module imports torch, imported on first use
_LAZY: dict[str, tuple[str, str]] = {
    "SHADING_MODES": ("sds_core.shading", "SHADING_MODES"),
    "CameraSampler": ("sds_core.cameras", "CameraSampler"),
    "LoadedRun": ("sds_core.lifecycle", "LoadedRun"),
    "ShadingConfig": ("sds_core.shading", "ShadingConfig"),
    "TensorSpec": ("sds_core.cache", "TensorSpec"),
    "cache_load": ("sds_core.cache", "load"),
    "cache_save": ("sds_core.cache", "save"),
    "choose_shading": ("sds_core.shading", "choose_shading"),
    "composite": ("sds_core.shading", "composite"),
    "load_plain": ("sds_core.checkpoint", "load_plain"),
    "load_run": ("sds_core.lifecycle", "load_run"),
    "resolve_device": ("sds_core.loop", "resolve_device"),
    "shade": ("sds_core.shading", "shade"),
    "FlowSchedule": ("sds_core.schedules", "FlowSchedule"),
    "VPSchedule": ("sds_core.schedules", "VPSchedule"),
    "to_uint8": ("sds_core.imaging", "to_uint8"),
}


def __getattr__(name: str) -> Any:
    """Import a torch-needing name on first use (PEP 562), then keep it in the module."""
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "EVAL_NODE_BYTES",
    "EXPORT_FORMATS",
    "MAX_EVAL_GRID_SIDE",
    "MAX_EVAL_VIEWS",
    "MAX_TEXTURE_SIDE",
    "PAPER_CPU_SIDE",
    "PAPER_CPU_STEPS",
    "SHADING_MODES",
    "TEXEL_BYTES",
    "VIEWS",
    "AdaptiveParameters",
    "BackgroundOptions",
    "BuildContext",
    "CameraBatch",
    "CameraConfig",
    "CameraSampler",
    "ConfigError",
    "DeclaresBackground",
    "DensityField",
    "DistillationLoss",
    "ExportContext",
    "ExportOptions",
    "FlowSchedule",
    "Generator",
    "GroundTruth",
    "Guidance",
    "GuidanceFacts",
    "LoadedRun",
    "LossOutput",
    "NegativePrompting",
    "NoisePrediction",
    "NoiseSchedule",
    "OwnsSchedule",
    "PluginError",
    "PluginSpec",
    "ReferenceOptions",
    "Registry",
    "Render",
    "RunFolder",
    "ScheduledLearningRates",
    "SdsError",
    "ShadingConfig",
    "ShadingOptions",
    "SurfaceMesh",
    "TensorSpec",
    "TrainableCopy",
    "TrainableLoss",
    "VPSchedule",
    "atomic_write",
    "build_config",
    "cache_load",
    "cache_root",
    "cache_save",
    "check_grid_side",
    "check_image_side",
    "choose_shading",
    "compile_enabled",
    "compiled",
    "composite",
    "hookimpl",
    "load_plain",
    "load_run",
    "per_sample_prompts",
    "resolve_device",
    "shade",
    "split_view",
    "to_uint8",
    "view_prompt",
]
