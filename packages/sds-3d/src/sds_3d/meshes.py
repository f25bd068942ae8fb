"""Mesh files of final/: a UV-textured mesh baked from a colour callable (xatlas) and a
vertex-coloured one, written as GLB, OBJ + MTL + PNG and PLY (trimesh), atomically.

World coordinates are z-up; glTF and OBJ files are written y-up (the convention Blender's importers
expect), so models open upright.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sds_3d.fields import PointFn, evaluate
from sds_core.api import MAX_TEXTURE_SIDE, TEXEL_BYTES, atomic_write, check_image_side

if TYPE_CHECKING:
    import trimesh

# z-up world -> y-up files: (x, y, z) -> (x, z, -y)
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def bake_texture(
    vertices: np.ndarray, faces: np.ndarray, color_fn: PointFn, size: int, device: torch.device | str = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """UV-unwrap with xatlas and bake colour_fn into a size x size texture.

    Returns (vmapping, new faces, uvs, texture uint8 (size, size, 3)). Texels are rasterised with
    PIL (triangle ids), coloured at their 3D point by barycentric interpolation, then dilated so
    that bilinear filtering at chart borders does not pick up the empty background.
    """
    import xatlas
    from PIL import Image, ImageDraw
    from scipy import ndimage

    check_image_side(
        size, "generator.texture_size", MAX_TEXTURE_SIDE, pixel_bytes=TEXEL_BYTES, purpose="baking the texture"
    )

    vmapping, indices, uvs = xatlas.parametrize(vertices.astype(np.float32), faces.astype(np.uint32))
    pix = uvs * size  # texel space, v up
    pix_img = np.stack([pix[:, 0], size - pix[:, 1]], -1)  # image space, y down
    ids = Image.new("I", (size, size), 0)
    draw = ImageDraw.Draw(ids)
    for f, tri in enumerate(indices):
        draw.polygon([tuple(p) for p in pix_img[tri]], fill=f + 1)
    face_id = np.asarray(ids, dtype=np.int64) - 1
    ys, xs = np.nonzero(face_id >= 0)
    fid = face_id[ys, xs]
    # barycentric coordinates of texel centres in their triangle
    p = np.stack([xs + 0.5, ys + 0.5], -1)
    a, b, c = (pix_img[indices[fid, k]] for k in range(3))
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    den = np.where(np.abs(den) < 1e-12, 1e-12, den)
    w1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    w2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    bary = np.clip(np.stack([1 - w1 - w2, w1, w2], -1), 0.0, 1.0)
    bary /= bary.sum(-1, keepdims=True)
    corners = vertices[vmapping][indices[fid]]  # (T, 3, 3)
    points = (bary[..., None] * corners).sum(1)
    texture = np.zeros((size, size, 3), dtype=np.float32)
    filled = np.zeros((size, size), dtype=bool)
    if len(points):
        texture[ys, xs] = np.clip(evaluate(color_fn, points, device), 0.0, 1.0)
        filled[ys, xs] = True
        _, (iy, ix) = ndimage.distance_transform_edt(~filled, return_indices=True)
        texture = texture[iy, ix]
    return vmapping, indices.astype(np.int64), uvs, (texture * 255).round().astype(np.uint8)


def build_meshes(
    vertices: np.ndarray,
    faces: np.ndarray,
    color_fn: PointFn,
    texture_size: int,
    device: torch.device | str = "cpu",
) -> tuple[trimesh.Trimesh, trimesh.Trimesh]:
    """(textured mesh, vertex-coloured mesh), both y-up, from a z-up world mesh."""
    import trimesh
    from PIL import Image

    colors = np.clip(evaluate(color_fn, vertices, device), 0.0, 1.0)
    rgba = np.concatenate([(colors * 255).round(), np.full((len(colors), 1), 255)], -1).astype(np.uint8)
    y_up = vertices @ Z_UP_TO_Y_UP.T
    colored = trimesh.Trimesh(y_up, faces, vertex_colors=rgba, process=False)
    vmapping, new_faces, uvs, texture = bake_texture(vertices, faces, color_fn, texture_size, device)
    material = trimesh.visual.material.PBRMaterial(
        name="albedo", baseColorTexture=Image.fromarray(texture), metallicFactor=0.0, roughnessFactor=1.0
    )
    visual = trimesh.visual.TextureVisuals(uv=uvs, material=material)
    textured = trimesh.Trimesh(y_up[vmapping], new_faces, visual=visual, process=False)
    return textured, colored


def write_file(path: Path, data: bytes | str) -> Path:
    """Write bytes, or text as UTF-8, atomically."""
    atomic_write(path, data.encode("utf-8") if isinstance(data, str) else data)
    return path


def write_mesh_files(
    out_dir: Path,
    textured: trimesh.Trimesh,
    colored: trimesh.Trimesh,
    formats: Sequence[str],
    name: str = "mesh",
    obj_digits: int = 8,
) -> tuple[list[Path], bytes | None]:
    """mesh.glb (UV texture), mesh.obj + mesh.mtl + texture PNG, mesh.ply (vertex colours);
    `obj_digits` decimals per OBJ coordinate.

    Returns the paths and the GLB bytes (for the viewer page)."""
    from trimesh.exchange.gltf import export_glb
    from trimesh.exchange.obj import export_obj
    from trimesh.exchange.ply import export_ply

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    glb: bytes | None = None
    if "glb" in formats or "html" in formats:
        glb = export_glb(textured)
        if "glb" in formats:
            paths.append(write_file(out_dir / f"{name}.glb", glb))
    if "obj" in formats:
        text, files = export_obj(
            textured, include_texture=True, return_texture=True, mtl_name=f"{name}.mtl", digits=obj_digits
        )
        for filename, data in files.items():
            paths.append(write_file(out_dir / filename, data))
        paths.append(write_file(out_dir / f"{name}.obj", text))
    if "ply" in formats:
        paths.append(write_file(out_dir / f"{name}.ply", export_ply(colored)))
    return paths, glb
