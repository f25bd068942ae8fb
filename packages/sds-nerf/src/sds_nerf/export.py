"""Final artefacts of the NeRF: its density's isosurface (marching cubes) and albedo, written by
`sds_3d.export.write_final` (mesh files, turntable, viewer)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from sds_3d.export import MESH_FORMATS, PointFn, density_grid, marching_cubes, requested_formats, write_final
from sds_core.api import ExportContext

if TYPE_CHECKING:
    from sds_nerf.generator import NerfGenerator


def export_nerf(generator: NerfGenerator, out_dir: Path, context: ExportContext) -> list[Path]:
    """Everything `final/` holds for a NeRF, honouring context.formats, resolution and threshold."""
    cfg = generator.cfg
    formats = requested_formats(context, cfg.export_formats)
    resolution = context.resolution or cfg.mesh_resolution
    level = context.threshold if context.threshold is not None else generator.surface_level()
    device = context.device
    was_training = generator.training
    generator.eval()
    try:
        surface = None
        if any(f in formats for f in (*MESH_FORMATS, "html")):
            grid = density_grid(generator.field.density, resolution, cfg.radius, device)
            try:
                verts, faces = marching_cubes(grid, level, cfg.radius)
            except ValueError as exc:
                warnings.warn(f"no mesh written: {exc}; pass another --threshold", stacklevel=2)
            else:
                albedo: PointFn = lambda p: generator.field(p)[1]  # noqa: E731
                surface = (verts, faces, albedo)
        generator.refresh_occupancy()
        return write_final(generator, Path(out_dir), context, formats, surface, device)
    finally:
        generator.train(was_training)
