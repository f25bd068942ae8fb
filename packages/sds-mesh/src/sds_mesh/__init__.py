"""sds-mesh: an explicit triangle mesh as an SDS generator (the `mesh` plugin)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sds-mesh")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
