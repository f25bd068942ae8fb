"""sds-nerf: the DreamFusion NeRF generator (`nerf`) for the sds toolkit.

Importing this package is cheap: torch and nerfacc are imported by the modules that need them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sds-nerf")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
