"""Guidance backends for sds: Stable Diffusion, DeepFloyd IF and the exact offline `shapes` prior.

Importing this package is cheap; the backends import torch, diffusers and transformers themselves.
"""

from __future__ import annotations

__version__ = "0.1.0"
