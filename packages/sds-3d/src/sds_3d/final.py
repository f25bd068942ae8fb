"""What every 3D generator's final/ holds, from its geometry protocols: mesh files (GLB, OBJ +
MTL + PNG, PLY) of its surface (`sds_3d.surface`), the turntable (MP4, GIF) and the viewer page,
plus whatever the generator writes itself (`extra`: the Gaussians' gaussians.ply)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
from torch import Tensor

from sds_3d.formats import requested_formats, wants_mesh, wants_turntable, wants_viewer
from sds_3d.meshes import build_meshes, write_mesh_files
from sds_3d.surface import Surface, surface_of
from sds_3d.textured import TexturedSurface, textured_meshes
from sds_3d.turntable import turntable_frames, write_turntable
from sds_3d.viewer import write_viewer
from sds_core.api import CameraBatch, ExportContext, ExportOptions


class Exportable(Protocol):
    """What final/ needs of a generator besides its geometry (`SurfaceMesh` or `DensityField`)."""

    @property
    def cfg(self) -> ExportOptions: ...  # texture_size, video_*, export_formats

    @property
    def training(self) -> bool: ...

    def eval(self) -> object: ...

    def train(self, mode: bool = True) -> object: ...

    def render_chunked(self, cameras: CameraBatch, mode: str) -> tuple[Tensor, Tensor]:
        """Images (B, 3, H, W) and opacities (B, 1, H, W) without gradients."""
        ...


def write_final(
    generator: Exportable,
    out_dir: Path,
    context: ExportContext,
    *,
    bound: float | None = None,
    resolution: int | None = None,
    extra: Callable[[Path], list[Path]] | None = None,
    before_render: Callable[[], None] | None = None,
) -> list[Path]:
    """Write final/ in eval mode, honouring `context` (formats, resolution, threshold); returns the paths.

    bound, resolution: a `DensityField`'s marching-cubes grid ([-bound, bound]^3, `resolution`
    nodes a side unless `--resolution`). extra(out_dir): the generator's own files, written first.
    before_render: called once the surface is extracted, before any render (the NeRF refreshes its
    occupancy grid there).
    """
    formats = requested_formats(context, generator.cfg.export_formats)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = generator.training
    generator.eval()
    try:
        paths = extra(out_dir) if extra is not None else []
        own = isinstance(generator, TexturedSurface)  # its own mesh and texture: nothing to extract
        surface = surface_of(generator, context, bound, resolution) if wants_mesh(formats) and not own else None
        if before_render is not None:
            before_render()
        return paths + write_artefacts(generator, out_dir, context, formats, surface)
    finally:
        generator.train(was_training)


def write_artefacts(
    generator: Exportable, out_dir: Path, context: ExportContext, formats: tuple[str, ...], surface: Surface | None
) -> list[Path]:
    """Mesh files of a `TexturedSurface`'s own mesh, else of `surface` (none when None), the turntable
    and the viewer page, as `formats` ask."""
    cfg = generator.cfg
    paths: list[Path] = []
    glb: bytes | None = None
    if isinstance(generator, TexturedSurface) and wants_mesh(formats):
        # the mesh as it was given, with its texture; OBJ digits enough for float32 to read back exactly
        textured, colored = textured_meshes(generator.uv_texture())
        written, glb = write_mesh_files(out_dir, textured, colored, formats, obj_digits=17)
        paths += written
    elif surface is not None and wants_mesh(formats):
        vertices, faces, albedo = surface
        textured, colored = build_meshes(vertices, faces, albedo, cfg.texture_size, context.device)
        written, glb = write_mesh_files(out_dir, textured, colored, formats)
        paths += written
    frames: list[np.ndarray] = []
    if wants_turntable(formats):
        render = generator.render_chunked
        frames = turntable_frames(render, context, cfg.video_frames, cfg.video_resolution, cfg.video_elevation)
        paths += write_turntable(out_dir, frames, cfg.video_fps, formats)
    if wants_viewer(formats):
        paths.append(write_viewer(out_dir, glb, frames, context.prompt))
    return paths
