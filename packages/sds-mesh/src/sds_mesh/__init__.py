"""sds-mesh: triangle-mesh SDS generators: an explicit mesh (the `mesh` plugin) and a UV texture on a
mesh the user brings (the `texture` plugin)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sds-mesh")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
