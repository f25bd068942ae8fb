"""sds-3d: what every 3D generator of sds shares, and no generator of its own.

background.py (the paper's MLP background, solid and random colours) · encoding.py (positional
encoding) · export.py (marching cubes, UV texture baking, GLB / OBJ / PLY, turntable, the
`final/` writer, y-up conversion, requested formats, a run's mesh for `generator.init`, chunked
renders) · viewer.py (the offline viewer page). `sds-nerf`, `sds-mesh` and `sds-gaussians` depend
on it; none depends on another.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sds-3d")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
