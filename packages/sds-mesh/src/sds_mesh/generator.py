"""The `mesh` generator: an explicit triangle mesh behind the sds Generator protocol.

Parameters: per-vertex offsets from a template (an icosphere) or from a NeRF run's mesh (Magic3D's
second stage, Lin et al. 2023, §4.2) and per-vertex colour logits. Rendering: a differentiable
rasteriser (`sds_mesh.rasterizer`) fills albedo, normal and position buffers, which are shaded per
pixel with each view's DreamFusion mode (§3.1, A.2; `sds_3d.shading`) and composited over the
background (`sds_3d.background`). final/ is `sds_3d.final`'s, from `surface_mesh()` and the
float vertex colours (`vertex_albedo`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sds_3d.background import build_background, ray_background
from sds_3d.chunked import render_chunked
from sds_3d.final import write_final
from sds_3d.rays import camera_rays
from sds_3d.shading import shade_views
from sds_core.api import (
    BuildContext,
    CameraBatch,
    ExportContext,
    Render,
    ShadingConfig,
    choose_shading,
    composite,
)
from sds_mesh.config import MeshConfig
from sds_mesh.mesh import (
    SmoothSolve,
    edge_length_loss,
    initial_mesh,
    laplacian_loss,
    normal_consistency_loss,
    topology,
    vertex_normals,
)
from sds_mesh.rasterizer import build_rasterizer


class MeshGenerator(nn.Module):
    """Vertices = base + offsets, colours = sigmoid(logits); rendered by a soft or CUDA rasteriser."""

    view_dependent = True
    base_vertices: Tensor
    faces: Tensor
    edges: Tensor
    adjacent_faces: Tensor

    def __init__(self, config: MeshConfig, context: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg = config
        device = torch.device(context.device)
        data = initial_mesh(cfg.init, cfg.subdivisions, cfg.radius, cfg.init_color)
        topo = topology(data.vertices, data.faces)
        # the starting mesh is part of the state: a resumed run needs the same topology
        self.register_buffer("base_vertices", torch.as_tensor(data.vertices, dtype=torch.float32))
        self.register_buffer("faces", torch.as_tensor(data.faces, dtype=torch.long))
        self.register_buffer("edges", topo.edges, persistent=False)
        self.register_buffer("adjacent_faces", topo.adjacent_faces, persistent=False)
        # the parameters u of the offsets (I + lambda L)^-1 u (Large Steps), or the offsets themselves
        self.offsets = nn.Parameter(torch.zeros_like(self.base_vertices))
        self.smooth = SmoothSolve(len(data.vertices), topo.edges, cfg.smoothness) if cfg.smoothness > 0 else None
        colors = torch.as_tensor(data.colors, dtype=torch.float32).clamp(0.02, 0.98)
        self.color_logits = nn.Parameter(torch.logit(colors))
        lengths = (self.base_vertices[self.edges[:, 0]] - self.base_vertices[self.edges[:, 1]]).norm(dim=-1)
        self.target_edge = float(lengths.mean()) if len(lengths) else 1.0
        self.background = build_background(cfg, context.guidance_facts())
        self.shading_cfg: ShadingConfig = cfg  # a 3D generator's config holds the shading options
        self.rasterizer = build_rasterizer(
            cfg.rasterizer, device, sigma=cfg.sigma, gamma=cfg.gamma, near=cfg.near, far=cfg.far,
            cull_backfaces=cfg.cull_backfaces, tile_size=cfg.tile_size, max_pairs=cfg.max_pairs,
            coverage=cfg.coverage,
        )  # fmt: skip

    # --- the mesh -----------------------------------------------------------------------------

    def vertices(self) -> Tensor:
        offsets = self.offsets if self.smooth is None else self.smooth(self.offsets)
        return self.base_vertices + offsets

    def colors(self) -> Tensor:
        return torch.sigmoid(self.color_logits)

    # --- rendering ------------------------------------------------------------------------------

    def render_views(self, cameras: CameraBatch, modes: list[str]) -> Render:
        """One image per camera with the given shading modes (differentiably)."""
        verts = self.vertices()
        normals = vertex_normals(verts, self.faces)
        attributes = torch.cat([self.colors(), normals, verts], dim=-1)
        frags = self.rasterizer(cameras, verts, self.faces, attributes)
        albedo, normal, points = frags.attributes.split(3, dim=-1)  # (B, H, W, 3) each
        normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        rgb = shade_views(modes, albedo, normal, points, cameras.light_position, self.cfg)
        b, h, w = cameras.batch_size, cameras.height, cameras.width
        bg = ray_background(self.background, camera_rays(cameras)).view(b, h, w, 3)
        opacity = frags.opacity
        color = composite(rgb * opacity, opacity, bg)
        color = self.rasterizer.antialias(torch.cat([color, opacity], dim=-1), frags)
        image = color[..., :3].permute(0, 3, 1, 2).clamp(0.0, 1.0)
        alpha = color[..., 3:].permute(0, 3, 1, 2).clamp(0.0, 1.0)
        return Render(image=image, space="rgb", opacity=alpha, shading=list(modes), aux={"log": {}})

    def render_chunked(self, cameras: CameraBatch, mode: str, chunk: int = 4) -> tuple[Tensor, Tensor]:
        """Images (B, 3, H, W) and opacities (B, 1, H, W) without gradients, a few cameras at a time."""
        return render_chunked(self.render_views, cameras, mode, chunk)

    # --- the Generator protocol ---------------------------------------------------------------

    def render(self, cameras: CameraBatch, step: int) -> Render:
        modes: list[str] = [choose_shading(step, self.shading_cfg) for _ in range(cameras.batch_size)]
        return self.render_views(cameras, modes)

    def regularizers(self, render: Render, cameras: CameraBatch, step: int) -> dict[str, Tensor]:
        cfg = self.cfg
        verts = self.vertices()
        terms: dict[str, Tensor] = {}
        if cfg.laplacian_weight > 0:
            terms["laplacian"] = cfg.laplacian_weight * laplacian_loss(verts, self.edges)
        if cfg.normal_weight > 0:
            terms["normal_consistency"] = cfg.normal_weight * normal_consistency_loss(
                verts, self.faces, self.adjacent_faces
            )
        if cfg.edge_weight > 0:
            terms["edge_length"] = cfg.edge_weight * edge_length_loss(verts, self.edges, self.target_edge)
        return terms

    def param_groups(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        # learning rates as multiples of optim.lr (`lr_scale`, applied by the loop); a NeRF mesh
        # (Magic3D's second stage) is refined with smaller vertex steps than a template
        position_scale = 1.0 if cfg.init == "icosphere" else cfg.refine_lr_scale
        groups: list[dict[str, Any]] = [
            {"params": [self.offsets], "lr_scale": position_scale},
            {"params": [self.color_logits], "lr_scale": cfg.color_lr_scale},
        ]
        background = [p for p in self.background.parameters() if p.requires_grad]
        if background:
            groups.append({"params": background})
        return groups

    def preview(self, cameras: CameraBatch, step: int, shading: str | None = None) -> Tensor:
        image, _ = self.render_chunked(cameras, shading or "albedo")
        return image

    def surface_mesh(self) -> Any:
        """The current mesh as a `trimesh.Trimesh` in world coordinates (z up) with vertex colours,
        for geometry evaluation (`sds eval geometry`)."""
        import trimesh

        with torch.no_grad():
            vertices = self.vertices().detach().cpu().numpy()
            colours = (self.colors().detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        faces = self.faces.cpu().numpy()
        return trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colours, process=False)

    def vertex_albedo(self) -> Tensor:
        """The vertex colours of `surface_mesh()` before their 8-bit rounding: what final/ bakes
        (`sds_3d.surface.VertexAlbedo`)."""
        return self.colors()

    def export(self, out_dir: Any, context: ExportContext) -> list[Any]:
        """final/ through `sds_3d.final` (`context.resolution` and `threshold` do not apply to a mesh)."""
        return write_final(self, Path(out_dir), context)
