"""sds-core: Score Distillation Sampling (DreamFusion, Poole et al. 2023) as a plugin host.

Importing this package is cheap: torch is imported only by the modules that need it, so that
`sds --help` and `sds plugins` stay fast.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from sds_core.errors import ConfigError, PluginError, SdsError

try:
    __version__ = version("sds-core")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["ConfigError", "PluginError", "SdsError", "__version__"]
