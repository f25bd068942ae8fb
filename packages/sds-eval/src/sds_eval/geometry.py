"""`sds eval geometry`: IoU, Chamfer distance and colour error of shapes-world runs.

A run's geometry comes from its generator, through one of two optional methods:
- `density_field() -> (density_fn, albedo_fn, level)`: world-space callables on (N, 3) points and
  the density level that mesh export uses (the NeRF), or
- `surface_mesh() -> trimesh.Trimesh`: a world-space mesh with vertex colours (the mesh generator).
The truth is the `shapes` guidance's object (`guidance.ground_truth`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sds_core.errors import SdsError


def _nearest_vertex_colours(mesh: Any) -> Any:
    """An albedo callable: the colour of the nearest mesh vertex (vertex colours in [0, 255])."""
    from scipy.spatial import cKDTree

    tree = cKDTree(mesh.vertices)
    colours = torch.as_tensor(mesh.visual.vertex_colors[:, :3], dtype=torch.float32) / 255.0

    def albedo(points: Tensor) -> Tensor:
        _, index = tree.query(points.detach().cpu().numpy())
        return colours[torch.as_tensor(index)]

    return albedo


def run_geometry(run_dir: Path, resolution: int = 64, device: str = "cpu") -> dict[str, Any]:
    """IoU, Chamfer and colour error of one run against its shapes-world object."""
    from sds_core.loop import resume_run

    if not (Path(run_dir) / "ckpts" / "last.pt").exists():
        raise SdsError(f"{run_dir} has no checkpoint (ckpts/last.pt) to evaluate")
    trainer = resume_run(Path(run_dir), device, lock=False)  # read only: no lock, no writes
    guidance, generator = trainer.guidance, trainer.generator
    if not hasattr(guidance, "ground_truth"):
        name = trainer.resolved.specs["guidance"].name
        raise SdsError(f"{run_dir} is not a shapes-world run (guidance {name!r}); geometry needs the shapes prior")
    from sds_guidance.shapes.metrics import evaluate

    truth = guidance.ground_truth
    generator.eval()
    metrics: dict[str, float | None]
    if hasattr(generator, "density_field"):
        density, albedo, level = generator.density_field()
        metrics = {**evaluate(density, truth, albedo, resolution=resolution, threshold=level), "level": float(level)}
    elif hasattr(generator, "surface_mesh"):
        mesh = generator.surface_mesh()
        # a mesh has its surface: no density level
        metrics = {**evaluate(mesh, truth, _nearest_vertex_colours(mesh), resolution=resolution), "level": None}
    else:
        name = trainer.resolved.specs["generator"].name
        raise SdsError(f"generator {name!r} of {run_dir} exposes no 3D geometry (a 2D image has none)")
    return {"run": str(run_dir), "prompt": trainer.prompt, "object": truth.prompt, **metrics}
