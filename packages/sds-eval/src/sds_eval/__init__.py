"""sds-eval: CLIP R-Precision (DreamFusion Table 1) and shapes-world geometry metrics."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sds-eval")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
