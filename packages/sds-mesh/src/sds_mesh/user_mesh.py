"""The mesh a user brings to the `texture` generator: read as it is, checked, given a UV atlas.

The file is hostile input: its size is bounded before it is read (`max_file_mb`), it is read by
trimesh (OBJ, GLB / glTF, PLY: no pickles), the triangle count is bounded (`max_faces`), and what
cannot be textured is one `ConfigError` sentence. Vertices and faces are kept exactly as trimesh
reads them (`process=False`, no welding or cleaning); the file's own UVs are kept when every vertex
has one, else xatlas unwraps the mesh (charts are cut wherever the surface needs it, so
non-manifold edges and degenerate faces are accepted; what is beyond repair is a mesh with
non-finite coordinates, face indices outside its vertices, or no triangle with an area).

Mesh files are y-up (glTF's axes, as `sds_3d.meshes` writes them); the world is z-up. The axes are
swapped by indexing and negation, which are exact, so a file's vertices come back bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sds_core.api import ConfigError

SUFFIXES = (".obj", ".glb", ".gltf", ".ply")
# what the texture generator holds per face (float32 corners, UVs, normals, int64 indices) and the
# rasteriser's per-face work (projected corners, bounding boxes, tile overlap), about 1 KiB: the
# estimate given when `max_faces` refuses a mesh
FACE_BYTES = 1024


@dataclass
class UserMesh:
    """A mesh file's triangles with a UV atlas.

    `vertices` / `faces` are the file's (as trimesh reads them, y-up); the atlas duplicates vertices
    along its seams: corner k of face f is `vertices[vmapping[uv_faces[f, k]]]` = `vertices[faces[f, k]]`.
    """

    vertices: np.ndarray  # (V, 3) float64, y-up, as read
    faces: np.ndarray  # (F, 3) int64
    vmapping: np.ndarray  # (U,) int64: the file vertex of each atlas vertex
    uv_faces: np.ndarray  # (F, 3) int64 into the atlas vertices
    uvs: np.ndarray  # (U, 2) float32 in [0, 1], v up (trimesh's convention)
    atlas: str  # "file" (its own UVs) or "xatlas"
    closed: bool  # watertight, consistently wound and facing outward: its back faces never show


def y_up_to_z_up(vertices: np.ndarray) -> np.ndarray:
    """File (y-up) points in world (z-up) axes: (x, y, z) -> (x, -z, y), the inverse of
    `sds_3d.meshes.Z_UP_TO_Y_UP`, by indexing and negation (exact, bit for bit)."""
    return np.stack([vertices[:, 0], -vertices[:, 2], vertices[:, 1]], -1)


def check_file(path: Path, max_file_mb: float) -> Path:
    """An existing regular file with a mesh suffix within the size bound, else a ConfigError."""
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"generator.mesh={str(path)!r} is not a mesh file; accepted: {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise ConfigError(f"generator.mesh={str(path)!r} is not an existing file")
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_file_mb:
        raise ConfigError(
            f"generator.mesh={str(path)!r} is {size_mb:.0f} MiB, above generator.max_file_mb={max_file_mb:g}"
        )
    return path


def read_mesh(path: Path) -> Any:
    """trimesh's reading of the file, unprocessed; a damaged or foreign file is a ConfigError."""
    import trimesh

    try:
        return trimesh.load(path, force="mesh", process=False)
    except (ValueError, OSError, KeyError, IndexError, TypeError, AttributeError, EOFError) as exc:
        # what trimesh raises on foreign or damaged files (as sds_mesh.mesh.load_mesh guards it)
        raise ConfigError(f"generator.mesh={str(path)!r} is not a readable mesh ({type(exc).__name__})") from None


def check_geometry(path: Path, vertices: np.ndarray, faces: np.ndarray, max_faces: int) -> None:
    """Refuse an empty, oversized or unrepairable triangle list in one sentence."""
    name = f"generator.mesh={str(path)!r}"
    if faces.ndim != 2 or len(faces) == 0 or faces.shape[1] != 3:
        raise ConfigError(f"{name} holds no triangles")
    if len(faces) > max_faces:
        need = len(faces) * FACE_BYTES / 2**20
        size = f"{need / 1024:.1f} GiB" if need >= 1024 else f"{need:.0f} MiB"
        raise ConfigError(
            f"{name} has {len(faces):,} faces, about {size} to texture; "
            f"at most generator.max_faces={max_faces:,} are accepted"
        )
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ConfigError(f"{name} is beyond repair: its faces index vertices it does not have")
    if not np.isfinite(vertices).all():
        raise ConfigError(f"{name} is beyond repair: it has non-finite vertex coordinates")
    corners = vertices[faces]
    area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=-1)
    if not (area > 0).any():
        raise ConfigError(f"{name} is beyond repair: none of its triangles has an area")


def file_uvs(mesh: Any) -> np.ndarray | None:
    """The file's own per-vertex UVs (V, 2) when it has finite ones for every vertex, else None."""
    uv = getattr(getattr(mesh, "visual", None), "uv", None)
    if uv is None:
        return None
    uv = np.asarray(uv, dtype=np.float64)
    if uv.shape != (len(mesh.vertices), 2) or not np.isfinite(uv).all():
        return None
    return uv


def unwrap(path: Path, vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas's atlas: (vmapping, uv_faces, uvs); its face order is checked to be the mesh's."""
    import xatlas

    vmapping, uv_faces, uvs = xatlas.parametrize(vertices.astype(np.float32), faces.astype(np.uint32))
    vmapping, uv_faces = vmapping.astype(np.int64), uv_faces.astype(np.int64)
    if uv_faces.shape != faces.shape or not np.array_equal(vmapping[uv_faces], faces):
        raise ConfigError(f"generator.mesh={str(path)!r}: xatlas could not chart every face; give the file UVs")
    return vmapping, uv_faces, uvs.astype(np.float32)


def load_user_mesh(path: str | Path, max_faces: int, max_file_mb: float, uvs: str = "auto") -> UserMesh:
    """Read, check and atlas a mesh file. uvs: "auto" (the file's, else xatlas) or "xatlas"."""
    path = check_file(Path(path).expanduser(), max_file_mb)
    mesh = read_mesh(path)
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
    check_geometry(path, vertices, faces, max_faces)
    closed = is_closed(vertices, faces)
    own = file_uvs(mesh) if uvs == "auto" else None
    if own is not None:
        identity = np.arange(len(vertices), dtype=np.int64)
        return UserMesh(vertices, faces, identity, faces.copy(), own.astype(np.float32), "file", closed)
    vmapping, uv_faces, atlas_uvs = unwrap(path, vertices, faces)
    return UserMesh(vertices, faces, vmapping, uv_faces, atlas_uvs, "xatlas", closed)


def is_closed(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Watertight once welded by position (a file's UV seams split vertices), consistently wound,
    with a positive volume (faces counter-clockwise seen from outside): trimesh's checks."""
    import trimesh

    welded = trimesh.Trimesh(vertices, faces, process=False)
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    return bool(welded.is_watertight and welded.is_winding_consistent and welded.volume > 0)
