"""The sds-mesh tests skip when the package (or trimesh) is not installed."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("trimesh")
pytest.importorskip("sds_mesh")


@pytest.fixture
def cube_file(tmp_path_factory: pytest.TempPathFactory):
    """A factory of mesh files of the shapes world's cube (trimesh's 12-face box, side 0.44, y-up as
    sds writes meshes): cube_file(".ply") with no UVs, cube_file(".glb", uvs=True) with its own."""
    import numpy as np
    import trimesh

    folder = tmp_path_factory.mktemp("meshes")

    def make(suffix: str = ".ply", uvs: bool = False):
        box = trimesh.creation.box(extents=(0.44, 0.44, 0.44))
        if uvs:  # one UV per vertex: its x and z, a planar projection
            uv = (np.asarray(box.vertices)[:, [0, 2]] / 0.44 + 0.5).clip(0, 1)
            box = trimesh.Trimesh(box.vertices, box.faces, visual=trimesh.visual.TextureVisuals(uv=uv), process=False)
        path = folder / f"cube-{'uv' if uvs else 'plain'}{suffix}"
        data = box.export(file_type=suffix.lstrip("."))
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    return make
