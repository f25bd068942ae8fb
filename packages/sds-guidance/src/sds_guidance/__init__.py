"""Guidance backends for sds: Stable Diffusion (1.x/2.x, XL, 3), FLUX.1 and DeepFloyd IF.

Importing this package is cheap; the backends import torch, diffusers and transformers themselves.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sds-guidance")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
