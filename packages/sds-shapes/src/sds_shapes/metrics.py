"""What the `shapes` prior can measure and no real prior can: geometry and colour against the truth.

A prediction is a density field, given as a callable on points (N, 3) -> (N,), as a dense grid
(R, R, R) sampled at `grid_points(R, bound)` (indexing x, y, z), or a `trimesh.Trimesh`.
- volumetric IoU of {density > threshold} (or the mesh's filled voxels) and {sdf <= 0};
- the same IoU free of yaw for an object a quarter turn about z leaves unchanged (the cube): the
  best over turns of the truth about z, because a prior that learned from §3.2's view-captioned
  images cannot know that object's yaw (`yaw_free_iou`);
- Chamfer distance between surface samples (marching cubes of the field, or mesh samples) and
  the true surface: the mean of the two directed mean nearest-neighbour distances, in world units;
- colour error: mean absolute RGB difference of the predicted albedo at true surface points;
- for an object with a front (`world.FRONT_PRIMITIVES`), the Janus score: the fraction of the
  true front part mirrored to the back (x -> -x) that the prediction occupies (`janus_score`,
  the bird's nose), or that shows the front's colour (`mark_janus_score`, the marked cube's face).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sds_shapes.world import BOUND_RADIUS, MARK_RGB, MARKS, ShapeObject

Field = Callable[[Tensor], Tensor] | Tensor | Any  # callable, (R, R, R) grid, or trimesh.Trimesh
DEFAULT_BOUND = BOUND_RADIUS + 0.15  # every primitive lies inside [-0.45, 0.45]^3
# a density level for DreamFusion-style NeRFs (exp-activated density); pass your own
DEFAULT_THRESHOLD = 10.0


def grid_points(resolution: int, bound: float = DEFAULT_BOUND) -> Tensor:
    """(R^3, 3) points of a regular grid over [-bound, bound]^3, x slowest, z fastest."""
    axis = torch.linspace(-bound, bound, resolution)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def _is_mesh(obj: Any) -> bool:
    return hasattr(obj, "vertices") and hasattr(obj, "faces")


def _evaluate(field: Callable[[Tensor], Tensor], points: Tensor, chunk: int = 65536) -> Tensor:
    with torch.no_grad():
        return torch.cat([field(points[i : i + chunk]).reshape(-1).float().cpu() for i in range(0, len(points), chunk)])


def occupancy(
    pred: Field, resolution: int = 64, bound: float = DEFAULT_BOUND, threshold: float = DEFAULT_THRESHOLD
) -> Tensor:
    """(R, R, R) bool occupancy of a prediction on `grid_points(R, bound)` (a grid keeps its own R)."""
    if _is_mesh(pred):
        pitch = 2 * bound / (resolution - 1)
        mesh: Any = pred
        filled = mesh.voxelized(pitch).fill()
        inside = filled.is_filled(grid_points(resolution, bound).numpy())
        return torch.from_numpy(np.asarray(inside)).view(resolution, resolution, resolution)
    if isinstance(pred, Tensor):
        if pred.dim() != 3 or len(set(pred.shape)) != 1:
            raise ValueError(f"a density grid must be (R, R, R), not {tuple(pred.shape)}")
        return pred.detach().cpu() > threshold
    values = _evaluate(pred, grid_points(resolution, bound))
    return (values > threshold).view(resolution, resolution, resolution)


def true_occupancy(truth: ShapeObject, resolution: int = 64, bound: float = DEFAULT_BOUND) -> Tensor:
    return truth.contains(grid_points(resolution, bound)).view(resolution, resolution, resolution)


def _iou(occ: Tensor, gt: Tensor) -> float:
    union = (occ | gt).sum()
    return float((occ & gt).sum() / union) if union > 0 else 1.0


def volumetric_iou(
    pred: Field,
    truth: ShapeObject,
    resolution: int = 64,
    bound: float = DEFAULT_BOUND,
    threshold: float = DEFAULT_THRESHOLD,
) -> float:
    """|pred ∩ truth| / |pred ∪ truth| on a regular grid."""
    occ = occupancy(pred, resolution, bound, threshold)
    return _iou(occ, true_occupancy(truth, occ.shape[0], bound))


def turned_about_z(points: Tensor, degrees: float) -> Tensor:
    """Points (N, 3) turned by `degrees` about the z axis (counter-clockwise seen from above)."""
    angle = math.radians(degrees)
    c, s = math.cos(angle), math.sin(angle)
    x, y = points[:, 0], points[:, 1]
    return torch.stack([c * x - s * y, s * x + c * y, points[:, 2]], dim=-1)


def quarter_turn_symmetric(truth: ShapeObject, resolution: int = 32, bound: float = DEFAULT_BOUND) -> bool:
    """Whether a quarter turn about z leaves the object unchanged (sphere, cube, cylinder, cone; not the torus).

    Checked exactly on a grid symmetric about 0: (x, y) -> (-y, x) maps its points onto its points.
    """
    points = grid_points(resolution, bound)
    quarter = torch.stack([-points[:, 1], points[:, 0], points[:, 2]], dim=-1)
    return bool(torch.equal(truth.contains(points), truth.contains(quarter)))


def yaw_free_iou(
    pred: Field,
    truth: ShapeObject,
    resolution: int = 64,
    bound: float = DEFAULT_BOUND,
    threshold: float = DEFAULT_THRESHOLD,
    step_degrees: float = 1.0,
    occ: Tensor | None = None,
) -> tuple[float, float]:
    """(IoU, turn in degrees): the best IoU over turns of the truth about z, for an object a quarter
    turn leaves unchanged; any other object keeps its yaw ((plain IoU, 0.0)).

    Why: §3.2's view suffixes label azimuth in 90-degree bins (front, side, back: each a union of
    90-degree arcs, `sds_core.cameras.view_labels`) and A.2 draws azimuth uniformly, so every yaw
    of such an object gives the same captioned images. A prior learned from them cannot fix the
    yaw and SDS has no reason to undo a turn, which the plain IoU charges as an error (a cube
    against itself turned 45 degrees: 0.71). The exact `shapes` prior renders the world's own
    frame, so for it the plain IoU is the figure. `occ`: a precomputed `occupancy` of `pred`.
    """
    if occ is None:
        occ = occupancy(pred, resolution, bound, threshold)
    res = occ.shape[0]
    flat = occ.reshape(-1)
    points = grid_points(res, bound)
    inside = truth.contains(points)
    plain = _iou(flat, inside)
    if not quarter_turn_symmetric(truth, bound=bound):
        return plain, 0.0
    # a quarter turn and a 37-degree one generate every whole-degree turn: an object both leave
    # unchanged (up to the grid's rounding) is round, and no turn the search tries changes it
    odd_turn = truth.contains(turned_about_z(points, 37.0))
    if (odd_turn != inside).sum() <= 1e-3 * inside.sum():
        return plain, 0.0
    best, best_turn = plain, 0.0
    turns = torch.arange(step_degrees, 90.0, step_degrees).tolist()
    for degrees in turns:
        # the truth turned by +degrees holds p when p turned back by -degrees lies in the truth
        score = _iou(flat, truth.contains(turned_about_z(points, -degrees)))
        if score > best:
            best, best_turn = score, degrees
    return best, best_turn


def _marching_cubes(values: Tensor, level: float, bound: float) -> Tensor:
    from skimage.measure import marching_cubes

    res = values.shape[0]
    array = values.numpy().astype(np.float32)
    if not (array.min() < level < array.max()):
        return torch.zeros(0, 3)
    verts, _, _, _ = marching_cubes(array, level=level, spacing=(2 * bound / (res - 1),) * 3)
    return torch.from_numpy(verts.copy()).float() - bound


def surface_points(
    pred: Field,
    resolution: int = 64,
    bound: float = DEFAULT_BOUND,
    threshold: float = DEFAULT_THRESHOLD,
    samples: int = 20000,
) -> Tensor:
    """Points on the predicted surface: mesh samples, or marching-cubes vertices of the field."""
    if _is_mesh(pred):
        import trimesh

        points, _ = trimesh.sample.sample_surface(pred, samples, seed=0)  # type: ignore[arg-type]
        return torch.from_numpy(np.asarray(points)).float()
    if isinstance(pred, Tensor):
        values = pred.detach().cpu().float()
        return _marching_cubes(values, threshold, bound)
    values = _evaluate(pred, grid_points(resolution, bound)).view(resolution, resolution, resolution)
    return _marching_cubes(values, threshold, bound)


def true_surface_points(truth: ShapeObject, resolution: int = 128, bound: float = DEFAULT_BOUND) -> Tensor:
    """Points on the true surface (marching cubes of the exact SDF at a fine grid)."""
    values = truth.sdf(grid_points(resolution, bound)).view(resolution, resolution, resolution)
    return _marching_cubes(-values, 0.0, bound)  # inside positive, as a density


def chamfer_distance(a: Tensor, b: Tensor, chunk: int = 4096) -> float:
    """Symmetric Chamfer distance: (mean_a min_b |a - b| + mean_b min_a |a - b|) / 2."""
    if len(a) == 0 or len(b) == 0:
        return float("inf")

    def directed(x: Tensor, y: Tensor) -> Tensor:
        return torch.cat([torch.cdist(x[i : i + chunk], y).min(dim=1).values for i in range(0, len(x), chunk)]).mean()

    return float((directed(a, b) + directed(b, a)) / 2)


def shape_chamfer(
    pred: Field,
    truth: ShapeObject,
    resolution: int = 64,
    bound: float = DEFAULT_BOUND,
    threshold: float = DEFAULT_THRESHOLD,
) -> float:
    """Chamfer distance of the predicted surface to the true surface, in world units."""
    return chamfer_distance(surface_points(pred, resolution, bound, threshold), true_surface_points(truth))


def colour_error(albedo: Callable[[Tensor], Tensor] | Tensor | tuple[float, float, float], truth: ShapeObject) -> float:
    """Mean absolute RGB error of a predicted albedo (a callable on points, or one colour) on the true surface."""
    points = true_surface_points(truth, resolution=64)
    target = truth.albedo(points)
    if callable(albedo):
        with torch.no_grad():
            pred = albedo(points).reshape(-1, 3).float().cpu()
    else:
        pred = torch.as_tensor(albedo, dtype=torch.float32).reshape(-1, 3).expand_as(target)
    return float((pred - target).abs().mean())


def mirrored_front_x(points: Tensor) -> Tensor:
    """Points (N, 3) mirrored front to back: (x, y, z) -> (-x, y, z), x being the world's front."""
    return points * points.new_tensor([-1.0, 1.0, 1.0])


def janus_score(occ: Tensor, truth: ShapeObject, bound: float = DEFAULT_BOUND) -> dict[str, float] | None:
    """The Janus score of an occupancy grid (R, R, R) on `grid_points(R, bound)` against an object
    whose front is a shape (the bird); None for any other object (`mark_janus_score`: a colour).

    With F the true front part (`ShapeObject.front_part`: the bird's nose outside its body) and
    M(F) its mirror image behind the object (x -> -x, disjoint from the true object),
        janus       = |occ ∩ M(F)| / |M(F)|   (the front part found where the truth has none),
        janus_front = |occ ∩ F| / |F|         (the front part found where it belongs).
    The true object scores janus 0 and janus_front 1; a two-faced one (the truth and M(F)) janus 1.
    The grid is symmetric about 0, so |M(F)| = |F| node for node.
    """
    if not truth.has_front or truth.primitive in MARKS:
        return None
    flat = occ.reshape(-1)
    points = grid_points(occ.shape[0], bound)
    front = truth.front_part(points)
    back = truth.front_part(mirrored_front_x(points))
    if not bool(front.any()):
        side = occ.shape[0]
        raise ValueError(f"the grid ({side} nodes a side) is too coarse to hold the front part of {truth.prompt!r}")
    return {
        "janus": float((flat & back).sum() / back.sum()),
        "janus_front": float((flat & front).sum() / front.sum()),
    }


def mark_janus_score(
    albedo: Callable[[Tensor], Tensor] | Tensor | tuple[float, float, float], truth: ShapeObject
) -> dict[str, float] | None:
    """The Janus score of a predicted albedo against an object whose front is a colour (the marked
    cube, `world.MARKS`); None for any other object.

    On the true surface S (`true_surface_points`), with K the mark (the front face) and M the mirror
    x -> -x (M(K): the back face), a point shows the mark when its predicted colour is nearer
    MARK_RGB than the body's colour (RGB distance):
        janus       = |{p in S ∩ M(K): p shows the mark}| / |S ∩ M(K)|   (the front colour on the back),
        janus_front = |{p in S ∩ K: p shows the mark}| / |S ∩ K|.
    """
    if truth.primitive not in MARKS:
        return None
    points = true_surface_points(truth, resolution=64)
    if callable(albedo):
        with torch.no_grad():
            pred = albedo(points).reshape(-1, 3).float().cpu()
    else:
        pred = torch.as_tensor(albedo, dtype=torch.float32).reshape(-1, 3).expand(len(points), 3)
    shows = (pred - torch.tensor(MARK_RGB)).norm(dim=-1) < (pred - torch.tensor(truth.rgb)).norm(dim=-1)
    front = MARKS[truth.primitive](points)
    back = MARKS[truth.primitive](mirrored_front_x(points))
    return {
        "janus": float((shows & back).sum() / back.sum()),
        "janus_front": float((shows & front).sum() / front.sum()),
    }


def evaluate(
    pred: Field,
    truth: ShapeObject,
    albedo: Callable[[Tensor], Tensor] | Tensor | tuple[float, float, float] | None = None,
    resolution: int = 64,
    bound: float = DEFAULT_BOUND,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, float]:
    """IoU (plain and yaw-free, with the turn), Chamfer distance and (when an albedo is given)
    colour error, as a dict; for an object with a front, its Janus score too (`janus_score`; for
    a marked object, `mark_janus_score`, when an albedo is given)."""
    occ = occupancy(pred, resolution, bound, threshold)
    yaw_free, turn = yaw_free_iou(pred, truth, bound=bound, occ=occ)
    out = {
        "iou": _iou(occ, true_occupancy(truth, occ.shape[0], bound)),
        "iou_yaw_free": yaw_free,
        "yaw_degrees": turn,
        "chamfer": shape_chamfer(pred, truth, resolution, bound, threshold),
    }
    if albedo is not None:
        out["colour_error"] = colour_error(albedo, truth)
    janus = janus_score(occ, truth, bound)
    if janus is None and albedo is not None:
        janus = mark_janus_score(albedo, truth)
    if janus is not None:
        out.update(janus)
    return out
