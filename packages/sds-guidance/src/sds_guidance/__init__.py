"""Guidance backends for sds: Stable Diffusion, DeepFloyd IF and the exact offline `shapes` prior.

Importing this package is cheap; the backends import torch, diffusers and transformers themselves.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sds-guidance")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
