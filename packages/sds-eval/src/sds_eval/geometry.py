"""`sds eval geometry`: IoU, Chamfer distance and colour error of shapes-world runs.

A run's geometry comes from its generator, through one of two optional capabilities
(`sds_core.protocols`): `DensityField` (the NeRF: density and albedo callables and the density
level that mesh export uses) or `SurfaceMesh` (the mesh generator: a world-space mesh with vertex
colours). The truth is the shapes-world object the run's prompt names ("a red cube, side view"),
whatever the guidance: the `shapes` prior, or a learned prior such as `shapes-learned`. For an
object with a front (the bird, the marked cube) the row has its Janus score (`janus`,
`janus_front`; None for the others): docs/evaluation.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sds_core.api import (
    EVAL_NODE_BYTES,
    MAX_EVAL_GRID_SIDE,
    DensityField,
    RunFolder,
    SdsError,
    SurfaceMesh,
    check_grid_side,
)

# the Janus score of an object with a front (`sds_shapes.metrics.janus_score`), None otherwise
JANUS_KEYS = ("janus", "janus_front")


def _nearest_vertex_colours(mesh: Any) -> Any:
    """An albedo callable: the colour of the nearest mesh vertex (vertex colours in [0, 255])."""
    from scipy.spatial import cKDTree

    tree = cKDTree(mesh.vertices)
    colours = torch.as_tensor(mesh.visual.vertex_colors[:, :3], dtype=torch.float32) / 255.0

    def albedo(points: Tensor) -> Tensor:
        _, index = tree.query(points.detach().cpu().numpy())
        return colours[torch.as_tensor(index)]

    return albedo


def check_eval_resolution(resolution: int) -> int:
    """`resolution` (nodes per side of the IoU grid) within [2, MAX_EVAL_GRID_SIDE], else a ConfigError
    with the memory its grid would need."""
    return check_grid_side(
        resolution, "--resolution", MAX_EVAL_GRID_SIDE, EVAL_NODE_BYTES, purpose="the geometry evaluation's grid"
    )


def run_geometry(run_dir: Path, resolution: int = 64, device: str = "cpu") -> dict[str, Any]:
    """IoU, Chamfer, colour error (and Janus score) of one run against its shapes-world object (the IoU grid's
    side is checked against `sds_core.limits.MAX_EVAL_GRID_SIDE` before the run is loaded)."""
    from sds_core.api import load_run

    check_eval_resolution(resolution)
    if not RunFolder(Path(run_dir)).last_checkpoint.exists():
        raise SdsError(f"{run_dir} has no checkpoint (ckpts/last.pt) to evaluate")
    run = load_run(Path(run_dir), device)  # read only: no lock, no writes
    generator = run.generator
    from sds_shapes.metrics import evaluate
    from sds_shapes.world import parse_prompt, vocabulary

    try:
        truth = parse_prompt(run.prompt).obj
    except SdsError:
        raise SdsError(
            f"the prompt of {run_dir} ({run.prompt!r}) names no shapes-world object ({vocabulary()}); "
            "geometry needs its ground truth"
        ) from None
    metrics: dict[str, float | None]
    if isinstance(generator, DensityField):
        density, albedo, level = generator.density_field()
        metrics = {**evaluate(density, truth, albedo, resolution=resolution, threshold=level), "level": float(level)}
    elif isinstance(generator, SurfaceMesh):
        mesh = generator.surface_mesh()
        # a mesh has its surface: no density level
        metrics = {**evaluate(mesh, truth, _nearest_vertex_colours(mesh), resolution=resolution), "level": None}
    else:
        name = run.resolved.specs["generator"].name
        raise SdsError(f"generator {name!r} of {run_dir} exposes no 3D geometry (a 2D image has none)")
    for key in JANUS_KEYS:  # an object without a front has no Janus score
        metrics.setdefault(key, None)
    return {"run": str(run_dir), "prompt": run.prompt, "object": truth.prompt, **metrics}
