"""sds-gaussians: 3D Gaussian splatting as an SDS generator (the `gaussians` plugin)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sds-gaussians")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
