"""The public API for plugin packages: what a generator, guidance or loss package imports from
sds-core. Torch-free at import, so that a plugin's registration module can use it and `sds --help`
stays fast. Names outside this module may change between minor versions."""

from __future__ import annotations

from sds_core.errors import ConfigError, PluginError, SdsError
from sds_core.generator_options import EXPORT_FORMATS, BackgroundOptions, ExportOptions, ShadingOptions
from sds_core.hookspecs import hookimpl
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
    Render,
    SurfaceMesh,
    TrainableCopy,
    TrainableLoss,
)
from sds_core.run import RunFolder

__all__ = [
    "EXPORT_FORMATS",
    "VIEWS",
    "AdaptiveParameters",
    "BackgroundOptions",
    "BuildContext",
    "CameraBatch",
    "ConfigError",
    "DeclaresBackground",
    "DensityField",
    "DistillationLoss",
    "ExportContext",
    "ExportOptions",
    "Generator",
    "GroundTruth",
    "Guidance",
    "GuidanceFacts",
    "LossOutput",
    "NegativePrompting",
    "NoisePrediction",
    "PluginError",
    "PluginSpec",
    "Registry",
    "Render",
    "RunFolder",
    "SdsError",
    "ShadingOptions",
    "SurfaceMesh",
    "TrainableCopy",
    "TrainableLoss",
    "cache_root",
    "hookimpl",
    "per_sample_prompts",
    "split_view",
    "view_prompt",
]
