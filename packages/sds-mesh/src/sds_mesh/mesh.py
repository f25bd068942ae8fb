"""Mesh templates, loading a NeRF run's mesh, topology, normals and the geometric regularisers.

World coordinates are z-up (sds-core); mesh files written by `sds_3d.meshes` are y-up, so a
mesh read from a run folder is turned back with the inverse of `Z_UP_TO_Y_UP`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sds_3d.meshes import Z_UP_TO_Y_UP
from sds_3d.run_mesh import run_mesh_path
from sds_core.api import ConfigError


@dataclass
class MeshData:
    """A triangle mesh in world (z-up) coordinates with vertex colours in [0, 1]."""

    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int64, counter-clockwise seen from outside
    colors: np.ndarray  # (V, 3) float32


def icosphere(subdivisions: int, radius: float, color: tuple[float, float, float]) -> MeshData:
    """trimesh's icosphere (outward-facing, counter-clockwise faces) in one colour."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    colors = np.tile(np.asarray(color, dtype=np.float32), (len(sphere.vertices), 1))
    return MeshData(np.asarray(sphere.vertices, np.float32), np.asarray(sphere.faces, np.int64), colors)


def resolve_mesh_path(init: str) -> Path:
    """A mesh file, or RUN_DIR/final/mesh.ply (else mesh.glb) for a run folder."""
    return run_mesh_path(init, "icosphere")


def load_mesh(path: Path, color: tuple[float, float, float]) -> MeshData:
    """A y-up mesh file (as `sds export` writes) as a z-up MeshData with vertex colours."""
    import trimesh

    try:
        mesh: Any = trimesh.load(path, force="mesh", process=False)
        # textured files split vertices along UV seams: weld them back into one closed surface
        mesh.merge_vertices(merge_tex=True, merge_norm=True)
        mesh.remove_unreferenced_vertices()
    except (ValueError, OSError, KeyError, IndexError, TypeError, AttributeError) as exc:
        # what trimesh raises on a foreign or damaged file (as sds_gaussians.gaussians guards it)
        raise ConfigError(f"generator.init: {path} is not a readable mesh ({type(exc).__name__}: {exc})") from None
    if len(getattr(mesh, "faces", ())) == 0:
        raise ConfigError(f"generator.init: {path} holds no triangles")
    visual = mesh.visual
    colors = np.zeros((0, 3), dtype=np.float32)
    if getattr(visual, "kind", None) == "vertex":  # PLY vertex colours
        colors = np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
    elif hasattr(visual, "to_color"):  # a UV texture (GLB, OBJ) sampled at the vertices
        colors = np.asarray(visual.to_color().vertex_colors, dtype=np.float32)[:, :3] / 255.0
    if colors.shape[0] != len(mesh.vertices):
        colors = np.tile(np.asarray(color, dtype=np.float32), (len(mesh.vertices), 1))
    vertices = np.asarray(mesh.vertices, dtype=np.float64) @ Z_UP_TO_Y_UP  # inverse of v @ M.T (M orthogonal)
    return MeshData(vertices.astype(np.float32), np.asarray(mesh.faces, np.int64), colors.astype(np.float32))


def initial_mesh(init: str, subdivisions: int, radius: float, color: tuple[float, float, float]) -> MeshData:
    """The starting mesh: an icosphere, or a NeRF run's exported mesh (Magic3D, Lin et al. 2023, §4.2)."""
    if init == "icosphere":
        return icosphere(subdivisions, radius, color)
    return load_mesh(resolve_mesh_path(init), color)


@dataclass
class Topology:
    """Edges and face adjacency of a fixed triangulation (trimesh computes them once)."""

    edges: Tensor  # (E, 2) unique undirected edges
    adjacent_faces: Tensor  # (A, 2) pairs of faces sharing an edge


def topology(vertices: np.ndarray, faces: np.ndarray) -> Topology:
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    edges = torch.as_tensor(np.array(mesh.edges_unique, np.int64))
    adjacent = torch.as_tensor(np.array(mesh.face_adjacency, np.int64)).reshape(-1, 2)
    return Topology(edges, adjacent)


def face_normals(vertices: Tensor, faces: Tensor, normalize: bool = True) -> Tensor:
    """(F, 3) normals of counter-clockwise faces; unnormalised ones have twice the face area."""
    a, b, c = vertices[faces].unbind(1)
    n = torch.linalg.cross(b - a, c - a, dim=-1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12) if normalize else n


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """(V, 3) area-weighted unit vertex normals."""
    n = face_normals(vertices, faces, normalize=False)
    out = torch.zeros_like(vertices).index_add(0, faces.reshape(-1), n.repeat_interleave(3, dim=0))
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def laplacian_loss(vertices: Tensor, edges: Tensor) -> Tensor:
    """Mean squared uniform Laplacian |v - mean of its neighbours|^2 (Laplacian smoothing)."""
    n = vertices.shape[0]
    i, j = edges[:, 0], edges[:, 1]
    total = torch.zeros_like(vertices).index_add(0, i, vertices[j]).index_add(0, j, vertices[i])
    degree = torch.zeros(n, dtype=vertices.dtype, device=vertices.device)
    degree = degree.index_add(0, i, torch.ones_like(i, dtype=vertices.dtype))
    degree = degree.index_add(0, j, torch.ones_like(j, dtype=vertices.dtype))
    lap = vertices - total / degree.clamp_min(1.0)[:, None]
    return (lap * lap).sum(-1).mean()


def normal_consistency_loss(vertices: Tensor, faces: Tensor, adjacent_faces: Tensor) -> Tensor:
    """Mean 1 - cos of the angle between the normals of faces that share an edge."""
    if adjacent_faces.numel() == 0:
        return vertices.new_zeros(())
    n = face_normals(vertices, faces)
    return (1.0 - (n[adjacent_faces[:, 0]] * n[adjacent_faces[:, 1]]).sum(-1)).mean()


def edge_length_loss(vertices: Tensor, edges: Tensor, target: float) -> Tensor:
    """Mean ((|e| - target) / target)^2: keeps triangles from collapsing or stretching."""
    length = (vertices[edges[:, 0]] - vertices[edges[:, 1]]).norm(dim=-1)
    return (((length - target) / target) ** 2).mean()


class SmoothSolve:
    """x = (I + lambda L)^-1 u for the uniform graph Laplacian L of a fixed mesh, differentiably.

    "Large Steps in Inverse Rendering of Geometry" (Nicolet et al. 2021, §4): optimising u instead
    of the vertex positions spreads each gradient over a smooth neighbourhood, so noisy gradients
    (SDS's are) move the surface without tearing it into spikes. The sparse system is factorised
    once by scipy (SuperLU); the matrix is symmetric, so the backward pass is the same solve.
    """

    def __init__(self, n_vertices: int, edges: Tensor, weight: float) -> None:
        import scipy.sparse as sp
        from scipy.sparse.linalg import factorized

        e = edges.cpu().numpy()
        ones = np.ones(len(e))
        adjacency = sp.coo_matrix((ones, (e[:, 0], e[:, 1])), shape=(n_vertices, n_vertices))
        adjacency = (adjacency + adjacency.T).tocsr()
        degree = np.asarray(adjacency.sum(1)).ravel()
        system = sp.identity(n_vertices) + weight * (sp.diags(degree) - adjacency)
        self.solve_np = factorized(system.tocsc())

    def solve(self, u: Tensor) -> Tensor:
        out = np.stack([self.solve_np(col) for col in u.detach().cpu().double().numpy().T], -1)
        return torch.as_tensor(out, dtype=u.dtype, device=u.device)

    def __call__(self, u: Tensor) -> Tensor:
        return _Solve.apply(u, self)  # type: ignore[no-any-return]


class _Solve(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: Tensor, solver: SmoothSolve) -> Tensor:
        ctx.solver = solver
        return solver.solve(u)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return ctx.solver.solve(grad), None
