"""sds-gaussians: 3D Gaussian splatting as an SDS generator (the `gaussians` plugin)."""

from __future__ import annotations

__version__ = "0.1.0"
