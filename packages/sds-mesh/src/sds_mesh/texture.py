"""The `texture` generator: SDS on a UV texture over a mesh the user brings, its geometry fixed.

The mesh file is read as it is (`sds_mesh.user_mesh`: vertices and faces bit for bit, the file's
UVs or an xatlas atlas). Each render rasterises it hard (`sds_mesh.uv_raster`: which face each
pixel sees, perspective-correct barycentrics), interpolates the UVs, samples the texture bilinearly
(`torch.nn.functional.grid_sample`, the only path a gradient takes) and shades the albedo with
each view's DreamFusion mode, albedo or Lambertian (§3.1, A.2; `sds_3d.shading`), over the shared
background (`sds_3d.background`). The texture is optimised in texel space: its logits are a sum of
levels of halving sides (`TextureConfig.pyramid_min_side`), so a render coarser than the texture
still reaches every texel it sees. final/ holds the same mesh with the texture bound
(`sds_3d.textured`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sds_3d.background import build_background, ray_background
from sds_3d.chunked import render_chunked
from sds_3d.final import write_final
from sds_3d.rays import camera_rays
from sds_3d.shading import shade_views
from sds_3d.textured import UVTexture
from sds_core.api import (
    MAX_TEXTURE_SIDE,
    TEXEL_BYTES,
    BuildContext,
    CameraBatch,
    ConfigError,
    ExportContext,
    Render,
    ShadingConfig,
    check_image_side,
    choose_shading,
    composite,
)
from sds_mesh.mesh import face_normals
from sds_mesh.texture_config import TextureConfig
from sds_mesh.user_mesh import load_user_mesh, y_up_to_z_up
from sds_mesh.uv_raster import Hits, build_hit_rasterizer


def pyramid_sides(size: int, min_side: int) -> list[int]:
    """The texture's level sides: size, size / 2, ... while at least min_side (size alone when
    min_side >= size)."""
    sides = [size]
    while sides[-1] // 2 >= max(1, min_side) and sides[-1] % 2 == 0:
        sides.append(sides[-1] // 2)
    return sides


def sample_texture(texture: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of a (1, C, S, S) texture (row 0 at v = 1) at UVs (B, H, W, 2), repeating
    outside [0, 1] as glTF's default sampler: (B, H, W, C)."""
    uv = uv - torch.floor(uv)
    grid = torch.stack([2 * uv[..., 0] - 1, 1 - 2 * uv[..., 1]], -1)  # grid_sample's y = -1 is row 0
    batch = texture.expand(uv.shape[0], -1, -1, -1)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


class TextureGenerator(nn.Module):
    """A fixed mesh with texture = sigmoid(sum of upsampled levels), rendered by a hard rasteriser."""

    view_dependent = True
    file_vertices: Tensor
    faces: Tensor
    vmapping: Tensor
    uv_faces: Tensor
    uvs: Tensor
    vertices_world: Tensor
    normals: Tensor

    def __init__(self, config: TextureConfig, context: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg = config
        device = torch.device(context.device)
        if not cfg.mesh:
            raise ConfigError("the texture generator needs a mesh file: --set generator.mesh=PATH (.obj, .glb, .ply)")
        if cfg.textureless_probability != 0:
            raise ConfigError(
                "generator.textureless_probability must be 0: a textureless render of a fixed mesh shows no texture"
            )
        size = check_image_side(cfg.texture_size, "generator.texture_size", MAX_TEXTURE_SIDE,
                                pixel_bytes=TEXEL_BYTES, purpose="the texture")  # fmt: skip
        user = load_user_mesh(cfg.mesh, cfg.max_faces, cfg.max_file_mb, cfg.uvs)
        self.atlas = user.atlas
        self.closed = user.closed
        # the mesh as read, y-up (what final/ writes back bit for bit) and its atlas: the run's state
        self.register_buffer("file_vertices", torch.as_tensor(user.vertices, dtype=torch.float64))
        self.register_buffer("faces", torch.as_tensor(user.faces))
        self.register_buffer("vmapping", torch.as_tensor(user.vmapping))
        self.register_buffer("uv_faces", torch.as_tensor(user.uv_faces))
        self.register_buffer("uvs", torch.as_tensor(user.uvs, dtype=torch.float32))
        world = torch.as_tensor(y_up_to_z_up(user.vertices), dtype=torch.float32)
        self.register_buffer("vertices_world", world, persistent=False)
        self.register_buffer("normals", self._normals(world, self.faces, cfg.normals), persistent=False)
        start = torch.logit(torch.tensor(cfg.init_color, dtype=torch.float32).clamp(0.02, 0.98))
        sides = pyramid_sides(size, cfg.pyramid_min_side)
        levels = [torch.zeros(1, 3, s, s) for s in sides]
        levels[-1] += start.view(1, 3, 1, 1)  # the coarsest level holds the starting colour
        self.levels = nn.ParameterList([nn.Parameter(level) for level in levels])
        self.background = build_background(cfg, context.guidance_facts())
        self.shading_cfg: ShadingConfig = cfg
        cull = cfg.cull_backfaces == "on" or (cfg.cull_backfaces == "auto" and user.closed)
        self.rasterizer = build_hit_rasterizer(cfg.rasterizer, device, cfg.near, cfg.far, cfg.tile_size,
                                               cfg.max_pairs, cull)  # fmt: skip

    @staticmethod
    def _normals(vertices: Tensor, faces: Tensor, kind: str) -> Tensor:
        """(F, 3) face normals, or (V, 3) area-weighted normals of the mesh welded by position."""
        if kind == "face":
            return face_normals(vertices, faces)
        _, welded = torch.unique(vertices, dim=0, return_inverse=True)
        n = face_normals(vertices, faces, normalize=False).repeat_interleave(3, dim=0)
        total = torch.zeros(int(welded.max()) + 1, 3).index_add(0, welded[faces].reshape(-1), n)
        out = total[welded]
        return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    # --- the texture ---------------------------------------------------------------------------

    def texture(self) -> Tensor:
        """(1, 3, S, S) albedo in [0, 1], row 0 the top of the image (v = 1)."""
        levels = list(self.levels)
        logits = levels[-1]
        for level in reversed(levels[:-1]):  # coarse to fine, doubling: about twice the finest's work
            logits = F.interpolate(logits, size=level.shape[-2:], mode="bilinear", align_corners=False) + level
        return torch.sigmoid(logits)

    # --- rendering ------------------------------------------------------------------------------

    def _interpolate(self, values: Tensor, index: Tensor, hits: Hits) -> Tensor:
        """Per-pixel barycentric interpolation of per-corner `values[index[face]]` (B, H, W, C)."""
        corners = values[index[hits.face.clamp_min(0)]]  # (B, H, W, 3, C)
        return (hits.bary[..., None] * corners).sum(-2)

    def render_views(self, cameras: CameraBatch, modes: list[str], texture: Tensor | None = None) -> Render:
        """One image per camera with the given shading modes (differentiable in the texture); training
        draws albedo or lambertian, the turntable's geometry view is textureless. `texture` (1, 3, S, S)
        in [0, 1] replaces the generator's own (a known pattern, in tests)."""
        hits = self.rasterizer(cameras, self.vertices_world, self.faces)
        covered = hits.covered[..., None]
        texture = self.texture() if texture is None else texture
        albedo = sample_texture(texture, self._interpolate(self.uvs, self.uv_faces, hits))
        points = self._interpolate(self.vertices_world, self.faces, hits)
        if self.normals.shape[0] == self.faces.shape[0]:
            normal = self.normals[hits.face.clamp_min(0)]
        else:
            normal = self._interpolate(self.normals, self.faces, hits)
            normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        # both sides drawn: the side a camera sees is lit (an open mesh's back face too)
        to_camera = cameras.position.to(points).view(-1, 1, 1, 3) - points
        normal = torch.where((normal * to_camera).sum(-1, keepdim=True) < 0, -normal, normal)
        rgb = shade_views(modes, albedo, normal, points, cameras.light_position, self.cfg)
        b, h, w = cameras.batch_size, cameras.height, cameras.width
        bg = ray_background(self.background, camera_rays(cameras)).view(b, h, w, 3)
        opacity = covered.to(rgb.dtype)
        image = composite(rgb * opacity, opacity, bg).permute(0, 3, 1, 2).clamp(0.0, 1.0)
        return Render(image=image, space="rgb", opacity=opacity.permute(0, 3, 1, 2), shading=list(modes),
                      aux={"log": {}})  # fmt: skip

    def render_chunked(self, cameras: CameraBatch, mode: str, chunk: int = 4) -> tuple[Tensor, Tensor]:
        """Images (B, 3, H, W) and opacities (B, 1, H, W) without gradients, a few cameras at a time."""
        return render_chunked(self.render_views, cameras, mode, chunk)

    # --- the Generator protocol -----------------------------------------------------------------

    def render(self, cameras: CameraBatch, step: int) -> Render:
        modes: list[str] = [choose_shading(step, self.shading_cfg) for _ in range(cameras.batch_size)]
        return self.render_views(cameras, modes)

    def regularizers(self, render: Render, cameras: CameraBatch, step: int) -> dict[str, Tensor]:
        return {}  # the geometry is given; the texture has no prior of its own

    def param_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = [{"params": list(self.levels), "name": "texture"}]
        background = [p for p in self.background.parameters() if p.requires_grad]
        if background:
            groups.append({"params": background, "name": "background"})
        return groups

    def preview(self, cameras: CameraBatch, step: int, shading: str | None = None) -> Tensor:
        image, _ = self.render_chunked(cameras, shading or "albedo")
        return image

    # --- geometry and final/ --------------------------------------------------------------------

    def texture_array(self) -> np.ndarray:
        """(S, S, 3) float32 albedo, row 0 the top."""
        with torch.no_grad():
            return self.texture()[0].permute(1, 2, 0).float().cpu().numpy()

    def uv_texture(self) -> UVTexture:
        """The mesh as read (y-up) with its atlas and texture: `sds_3d.textured.TexturedSurface`."""
        return UVTexture(
            vertices=self.file_vertices.cpu().numpy(),
            faces=self.faces.cpu().numpy(),
            vmapping=self.vmapping.cpu().numpy(),
            uv_faces=self.uv_faces.cpu().numpy(),
            uvs=self.uvs.cpu().numpy(),
            texture=self.texture_array(),
            double_sided=not self.closed,
        )

    def albedo_at(self, points: Tensor) -> Tensor:
        """The texture at the surface points nearest to world points (N, 3): (N, 3) (for colour error)."""
        from sds_3d.surface import VertexColorField

        atlas = self.vertices_world[self.vmapping].cpu().numpy()
        uv3 = np.concatenate([self.uvs.cpu().numpy(), np.zeros((len(atlas), 1), np.float32)], -1)
        uv = VertexColorField(atlas, self.uv_faces.cpu().numpy(), uv3)(points.cpu())[:, :2]
        with torch.no_grad():
            colour = sample_texture(self.texture().cpu(), uv.view(1, -1, 1, 2))
        return colour.reshape(-1, 3).to(points.device)

    def surface_mesh(self) -> Any:
        """The mesh in world coordinates (z up) with the texture at its vertices as vertex colours
        (`sds eval geometry`)."""
        import trimesh

        from sds_3d.textured import vertex_colours

        colours = (np.clip(vertex_colours(self.uv_texture()), 0, 1) * 255).round().astype(np.uint8)
        vertices = self.vertices_world.cpu().numpy()
        return trimesh.Trimesh(vertices, self.faces.cpu().numpy(), vertex_colors=colours, process=False)

    def export(self, out_dir: Any, context: ExportContext) -> list[Any]:
        """final/ through `sds_3d.final` (its mesh and texture as given: `sds_3d.textured`)."""
        return write_final(self, Path(out_dir), context)
