"""Final artefacts: a coloured, UV-textured mesh (GLB, OBJ + MTL + PNG, PLY), turntable videos
(MP4, GIF) and a self-contained `index.html`.

The mesh helpers take plain callables (density or colour at world points) so that any 3D
generator can reuse them (`sds_nerf.export`, `sds_mesh.export`). Every file is written atomically
(temporary file + rename). World coordinates are z-up; glTF and OBJ files are written y-up (the
convention Blender's importers expect), so models open upright.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from sds_3d.viewer import viewer_html
from sds_core.api import (
    MAX_TEXTURE_SIDE,
    TEXEL_BYTES,
    ConfigError,
    ExportContext,
    RunFolder,
    atomic_write,
    check_grid_side,
    check_image_side,
    to_uint8,
)

if TYPE_CHECKING:
    import trimesh

PointFn = Callable[[Tensor], Tensor]
MESH_FORMATS = ("glb", "obj", "ply")
VIDEO_FORMATS = ("mp4", "gif")
# z-up world -> y-up files: (x, y, z) -> (x, z, -y)
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
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


@torch.no_grad()
def evaluate(fn: PointFn, points: np.ndarray, device: torch.device | str = "cpu", chunk: int = 65536) -> np.ndarray:
    """fn at (N, 3) points, in chunks, as a numpy array."""
    out = []
    for start in range(0, len(points), chunk):
        pts = torch.as_tensor(points[start : start + chunk], dtype=torch.float32, device=device)
        out.append(fn(pts).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,), dtype=np.float32)


@torch.no_grad()
def density_grid(
    density_fn: PointFn, resolution: int, radius: float, device: torch.device | str = "cpu", chunk: int = 65536
) -> np.ndarray:
    """Density at the nodes of a resolution^3 grid spanning [-radius, radius]^3 (index order x, y, z).

    The resolution is checked against `sds_core.limits.MAX_GRID_SIDE` first (it may come from
    `--resolution` or a checkpoint's recorded `mesh_resolution`); the points are made a chunk at a
    time, so the grid itself (4 bytes a node) is the only resolution^3 allocation."""
    check_grid_side(resolution, "the marching-cubes resolution", purpose="its grid")
    axis = np.linspace(-radius, radius, resolution, dtype=np.float32)
    total = resolution**3
    grid = np.empty(total, dtype=np.float32)
    for start in range(0, total, chunk):
        index = np.arange(start, min(start + chunk, total))
        i, rest = np.divmod(index, resolution * resolution)
        j, k = np.divmod(rest, resolution)
        pts = torch.as_tensor(np.stack([axis[i], axis[j], axis[k]], -1), dtype=torch.float32, device=device)
        grid[start : start + len(index)] = density_fn(pts).float().cpu().numpy().reshape(-1)
    return grid.reshape(resolution, resolution, resolution)


def marching_cubes(grid: np.ndarray, level: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The `level` isosurface of a node grid over [-radius, radius]^3 (scikit-image's marching cubes).

    Faces are wound so that normals point outward, towards lower density.
    """
    from skimage import measure

    if not grid.min() < level < grid.max():
        raise ValueError(
            f"no surface at density level {level:g} (the field ranges {grid.min():.3g} .. {grid.max():.3g})"
        )
    spacing = 2 * radius / (grid.shape[0] - 1)
    # density grows inwards: scikit-image orients faces towards increasing values, so flip them
    verts, faces, _, _ = measure.marching_cubes(grid, level=level, spacing=(spacing,) * 3, gradient_direction="ascent")
    return (verts - radius).astype(np.float32), faces.astype(np.int64)


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


def _write(path: Path, data: bytes | str) -> Path:
    atomic_write(path, data.encode("utf-8") if isinstance(data, str) else data)
    return path


def write_mesh_files(
    out_dir: Path, textured: trimesh.Trimesh, colored: trimesh.Trimesh, formats: Sequence[str], name: str = "mesh"
) -> tuple[list[Path], bytes | None]:
    """mesh.glb (UV texture), mesh.obj + mesh.mtl + texture PNG, mesh.ply (vertex colours).

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
            paths.append(_write(out_dir / f"{name}.glb", glb))
    if "obj" in formats:
        text, files = export_obj(textured, include_texture=True, return_texture=True, mtl_name=f"{name}.mtl")
        for filename, data in files.items():
            paths.append(_write(out_dir / filename, data))
        paths.append(_write(out_dir / f"{name}.obj", text))
    if "ply" in formats:
        paths.append(_write(out_dir / f"{name}.ply", export_ply(colored)))
    return paths, glb


def write_turntable(out_dir: Path, frames: Sequence[np.ndarray], fps: int, formats: Sequence[str]) -> list[Path]:
    """turntable.mp4 (H.264 through imageio-ffmpeg's bundled ffmpeg) and turntable.gif."""
    from PIL import Image

    paths: list[Path] = []
    if "mp4" in formats:
        import imageio.v2 as imageio

        def mp4(tmp: Path) -> None:
            # sizes are padded up to a multiple of 16 by ffmpeg's macro_block_size
            imageio.mimwrite(tmp, list(frames), fps=fps, codec="libx264", quality=8, macro_block_size=16)

        paths.append(atomic_write(out_dir / "turntable.mp4", mp4, keep_suffix=True))
    if "gif" in formats:
        images = [Image.fromarray(f) for f in frames]
        buffer = io.BytesIO()
        images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
        paths.append(_write(out_dir / "turntable.gif", buffer.getvalue()))
    return paths


def write_viewer(out_dir: Path, glb: bytes | None, frames: Sequence[np.ndarray], title: str) -> Path:
    """final/index.html: the GLB embedded as a base64 data URI in a small WebGL viewer (no
    network), plus the turntable frames as a canvas fallback where WebGL is missing."""
    from PIL import Image

    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=90)
        encoded.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    glb_uri = "data:model/gltf-binary;base64," + base64.b64encode(glb).decode("ascii") if glb else ""
    return _write(out_dir / "index.html", viewer_html(title, glb_uri, encoded))


# --- what every 3D generator writes -------------------------------------------------------------


@torch.no_grad()
def render_chunked(
    render_views: Callable[[Any, list[str]], Any], cameras: Any, mode: str, chunk: int = 4
) -> tuple[Tensor, Tensor]:
    """Images (B, 3, H, W) and opacities (B, 1, H, W) without gradients, `chunk` cameras at a time:
    `render_views(cameras, modes)` is a generator's differentiable render (a `Render` with opacity)."""
    images, opacities = [], []
    for start in range(0, cameras.batch_size, chunk):
        part = cameras[start : start + chunk]
        render = render_views(part, [mode] * part.batch_size)
        assert render.opacity is not None
        images.append(render.image)
        opacities.append(render.opacity)
    return torch.cat(images), torch.cat(opacities)


def turntable_frames(generator: Any, context: ExportContext, frames: int, resolution: int) -> list[np.ndarray]:
    """Frames [colour | textureless] side by side, orbiting at the video elevation."""
    cfg = generator.cfg
    check_image_side(resolution, "generator.video_resolution")
    sampler = context.camera_sampler
    cams = sampler.orbit(frames, elevation=cfg.video_elevation, width=resolution, height=resolution)
    cams = cams.to(context.device)
    out = []
    for i in range(frames):
        one = cams[i]
        color, _ = generator.render_chunked(one, "albedo")
        with torch.enable_grad():
            geo, _ = generator.render_chunked(one, "textureless")
        out.append(np.concatenate([to_uint8(color[0]), to_uint8(geo[0])], axis=1))
    return out


def requested_formats(context: ExportContext, default: tuple[str, ...]) -> tuple[str, ...]:
    """The formats `sds export --format` asked for (else `default`); an unknown one is a user error."""
    formats = tuple(context.formats) if context.formats else tuple(default)
    unknown = sorted(set(formats) - set(MESH_FORMATS + VIDEO_FORMATS + ("html",)))
    if unknown:
        raise ConfigError(f"unknown export format(s) {unknown}; accepted: glb, obj, ply, mp4, gif, html")
    return formats


def write_final(
    generator: Any,
    out_dir: Path,
    context: ExportContext,
    formats: tuple[str, ...],
    surface: tuple[np.ndarray, np.ndarray, PointFn] | None,
    device: torch.device | str = "cpu",
) -> list[Path]:
    """What every 3D generator's final/ holds: mesh files from `surface` (vertices, faces, albedo
    callable; None when there is no surface), the turntable, and the viewer page.

    `generator` needs `cfg` (texture_size, video_frames, video_resolution, video_fps,
    video_elevation) and `render_chunked(cameras, mode)`; the NeRF and the mesh generator have both.
    """
    cfg = generator.cfg
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    glb: bytes | None = None
    if surface is not None and any(f in formats for f in (*MESH_FORMATS, "html")):
        verts, faces, albedo = surface
        textured, colored = build_meshes(verts, faces, albedo, cfg.texture_size, device)
        written, glb = write_mesh_files(out_dir, textured, colored, formats)
        paths += written
    frames: list[np.ndarray] = []
    if any(f in formats for f in VIDEO_FORMATS) or "html" in formats or "glb" in formats:
        frames = turntable_frames(generator, context, cfg.video_frames, cfg.video_resolution)
        paths += write_turntable(out_dir, frames, cfg.video_fps, formats)
    if "html" in formats or "glb" in formats:
        paths.append(write_viewer(out_dir, glb, frames, context.prompt))
    return paths
