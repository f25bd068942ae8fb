"""A generator's starting mesh from `generator.init`: a mesh file, or a run folder's final/ mesh."""

from __future__ import annotations

from pathlib import Path

from sds_core.api import ConfigError, RunFolder

RUN_MESH_NAMES = ("mesh.ply", "mesh.glb")  # what a generator started from a run folder reads, in order


def run_mesh_path(init: str, default: str) -> Path:
    """`generator.init` as a mesh file: the file itself, or RUN_DIR/final/mesh.ply (else mesh.glb)
    of a run folder; `default` is the generator's own starting shape, named in the error."""
    path = Path(init).expanduser()
    if path.is_dir():
        for folder in (RunFolder(path).final, path):
            for name in RUN_MESH_NAMES:
                if (folder / name).is_file():
                    return folder / name
        raise ConfigError(f"generator.init={init!r} is a folder without final/mesh.ply or final/mesh.glb")
    if path.is_file():
        return path
    raise ConfigError(f"generator.init={init!r} is neither {default!r} nor an existing run folder or mesh file")
