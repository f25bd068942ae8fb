"""sds-3d: what every 3D generator of sds shares, and no generator of its own.

Rendering: rays.py (a camera batch's rays, flattened, with each ray's camera) · shading.py
(DreamFusion's modes per view: per sample, pixel or Gaussian) · background.py (the paper's MLP
background, solid and random colours; the background of every ray, for compositing) ·
encoding.py (positional encoding) · chunked.py (renders without gradients, a few cameras at a
time).

final/: final.py (`write_final`: the writer every generator calls, from its geometry protocols
`SurfaceMesh` / `DensityField`) · surface.py (that surface: marching cubes, vertex colours at
points) · fields.py (point callables in chunks, density grids) · meshes.py (UV texture baking,
GLB / OBJ / PLY, y-up) · textured.py (a `TexturedSurface`'s own mesh and texture, seams
padded) · turntable.py (turntable frames, MP4 / GIF) · viewer.py (the offline
viewer page) · formats.py (the formats, which one an export asked for).

run_mesh.py: a run folder's mesh for `generator.init`. `sds-nerf`, `sds-mesh` and `sds-gaussians`
depend on this package; none depends on another.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sds-3d")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
