"""final/'s meshes for a generator that owns a UV texture (the `texture` generator): the mesh it
was given, vertices and faces as read, with its texture bound as glTF's `baseColorTexture`
(GLB, OBJ + MTL + PNG) and the texture sampled at the vertices (PLY), no re-baking.

Seams are padded: texels outside every UV island take the colour of the nearest texel inside one
(a distance transform), so bilinear filtering and mipmaps at an island's border never pick up
texels that no face owns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import trimesh


@dataclass
class UVTexture:
    """A y-up mesh with a UV atlas and its texture (row 0 the top of the image, v = 1)."""

    vertices: np.ndarray  # (V, 3) y-up, as the mesh file holds them
    faces: np.ndarray  # (F, 3) int64 into vertices
    vmapping: np.ndarray  # (U,) the vertex of each atlas vertex
    uv_faces: np.ndarray  # (F, 3) into the atlas vertices
    uvs: np.ndarray  # (U, 2) v up (trimesh's convention)
    texture: np.ndarray  # (S, S, 3) float in [0, 1]
    double_sided: bool = False  # glTF's doubleSided: an open mesh is seen from both sides


@runtime_checkable
class TexturedSurface(Protocol):
    """A generator whose final/ meshes are its own mesh and texture (`sds_3d.final` asks this
    before baking a `SurfaceMesh`'s vertex colours)."""

    def uv_texture(self) -> UVTexture: ...


def island_mask(uvs: np.ndarray, uv_faces: np.ndarray, size: int) -> np.ndarray:
    """(S, S) bool: the texels the UV triangles cover (PIL's polygon fill, edges included)."""
    from PIL import Image, ImageDraw

    pix = np.stack([uvs[:, 0] * size, (1.0 - uvs[:, 1]) * size], -1)  # image space, y down
    mask = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for tri in uv_faces:
        draw.polygon([tuple(p) for p in pix[tri]], fill=1, outline=1)
    return np.asarray(mask, dtype=bool)


def pad_seams(texture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Texels outside `mask` take the nearest covered texel's colour (scipy's distance transform)."""
    from scipy import ndimage

    if mask.all() or not mask.any():
        return texture
    _, (iy, ix) = ndimage.distance_transform_edt(~mask, return_indices=True)
    return texture[iy, ix]


def vertex_colours(tex: UVTexture) -> np.ndarray:
    """(V, 3) in [0, 1]: the texture at each vertex's UVs (nearest texel), averaged over its atlas copies."""
    size = tex.texture.shape[0]
    uv = tex.uvs - np.floor(tex.uvs)  # glTF's default sampler repeats
    col = np.clip((uv[:, 0] * size).astype(np.int64), 0, size - 1)
    row = np.clip(((1.0 - uv[:, 1]) * size).astype(np.int64), 0, size - 1)
    per_copy = tex.texture[row, col]
    total = np.zeros((len(tex.vertices), 3))
    np.add.at(total, tex.vmapping, per_copy)
    count = np.bincount(tex.vmapping, minlength=len(tex.vertices)).clip(1)[:, None]
    return np.asarray(total / count, dtype=np.float32)


def textured_meshes(tex: UVTexture, pad: bool = True) -> tuple[trimesh.Trimesh, trimesh.Trimesh]:
    """(textured mesh, vertex-coloured mesh), y-up, for `sds_3d.meshes.write_mesh_files`."""
    import trimesh
    from PIL import Image

    texture = np.clip(tex.texture, 0.0, 1.0)
    if pad:
        texture = pad_seams(texture, island_mask(tex.uvs, tex.uv_faces, texture.shape[0]))
    image = Image.fromarray((texture * 255).round().astype(np.uint8))
    material = trimesh.visual.material.PBRMaterial(
        name="albedo",
        baseColorTexture=image,
        metallicFactor=0.0,
        roughnessFactor=1.0,
        doubleSided=tex.double_sided,
    )
    visual = trimesh.visual.TextureVisuals(uv=tex.uvs, material=material)
    textured = trimesh.Trimesh(tex.vertices[tex.vmapping], tex.uv_faces, visual=visual, process=False)
    colours = vertex_colours(tex)
    rgba = np.concatenate([(colours * 255).round(), np.full((len(colours), 1), 255)], -1).astype(np.uint8)
    colored = trimesh.Trimesh(tex.vertices, tex.faces, vertex_colors=rgba, process=False)
    return textured, colored
