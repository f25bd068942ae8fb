"""sds-shapes: a procedural world with exact SDFs and the exact diffusion prior `shapes` over it.

world.py (primitives, colours, prompts) · render.py (reference renders) · denoiser.py (the exact
empirical denoiser) · guidance.py (the Guidance) · metrics.py (IoU, Chamfer, colour error) ·
config.py (options and presets). Torch only; the mesh metrics need the `metrics` extra.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sds-shapes")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
