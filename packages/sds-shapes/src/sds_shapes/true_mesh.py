"""A shapes-world object's true surface as a mesh file (the `texture` generator's input in
benchmarks and tests): the cube exactly (trimesh's 12-face box), the curved primitives (and the
marked cube, whose front face's vertices carry its mark) as the marching-cubes isosurface of their
exact SDF. Files are y-up, as sds writes meshes (glTF's axes).
Needs trimesh and scikit-image (`sds-shapes[metrics]`).

    python -m sds_shapes.true_mesh "a green cube" cube.ply [--resolution 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sds_shapes.world import MARK_RGB, MARKS, ShapeObject, parse_prompt

CUBE_HALF = 0.22  # sds_shapes.world._sdf_cube's half side
MESH_BOUND = 0.45  # every primitive lies inside [-0.45, 0.45]^3 (world.BOUND_RADIUS)


def to_y_up(vertices: np.ndarray) -> np.ndarray:
    """World (z-up) points as a y-up file holds them: (x, y, z) -> (x, z, -y), by indexing (exact)."""
    return np.stack([vertices[:, 0], vertices[:, 2], -vertices[:, 1]], -1)


def true_mesh(obj: ShapeObject, resolution: int = 64) -> Any:
    """The object's surface as a y-up `trimesh.Trimesh` in its albedo (vertex colours)."""
    import trimesh

    if obj.primitive == "cube":
        box = trimesh.creation.box(extents=(2 * CUBE_HALF,) * 3)
        vertices, faces = np.asarray(box.vertices, np.float32), np.asarray(box.faces, np.int64)
    else:
        from skimage import measure

        axis = torch.linspace(-MESH_BOUND, MESH_BOUND, resolution)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        sdf = obj.sdf(grid).reshape(resolution, resolution, resolution).numpy()
        spacing = (2 * MESH_BOUND / (resolution - 1),) * 3
        # -sdf grows inwards: "ascent" winds the faces counter-clockwise seen from outside
        verts, faces, _, _ = measure.marching_cubes(-sdf, 0.0, spacing=spacing, gradient_direction="ascent")
        vertices, faces = (verts - MESH_BOUND).astype(np.float32), faces.astype(np.int64)
    colour = np.array([*(round(255 * c) for c in obj.rgb), 255], dtype=np.uint8)
    colours = np.tile(colour, (len(vertices), 1))
    if obj.primitive in MARKS:  # the marked cube (marching cubes): its front face's vertices in MARK_RGB
        mark = MARKS[obj.primitive](torch.from_numpy(vertices)).numpy()
        colours[mark, :3] = [round(255 * c) for c in MARK_RGB]
    mesh = trimesh.Trimesh(to_y_up(vertices), faces, vertex_colors=colours, process=False)
    return mesh


def write_true_mesh(prompt: str, path: Path, resolution: int = 64) -> Path:
    """Write the true mesh of the object `prompt` names to `path` (.ply, .glb or .obj, by suffix)."""
    mesh = true_mesh(parse_prompt(prompt).obj, resolution)
    path = Path(path)
    path.write_bytes(mesh.export(file_type=path.suffix.lstrip(".").lower()))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", help='a shapes-world object, e.g. "a green cube"')
    parser.add_argument("path", type=Path, help="the mesh file to write (.ply, .glb or .obj)")
    parser.add_argument("--resolution", type=int, default=64, help="marching-cubes nodes per side (curved shapes)")
    args = parser.parse_args(argv)
    from sds_core.api import SdsError

    try:
        write_true_mesh(args.prompt, args.path, args.resolution)
    except SdsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
