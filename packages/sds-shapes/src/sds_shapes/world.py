"""The procedural world of the `shapes` prior: primitives with exact SDFs, and colours.

World frame as sds-core: z up, the front is +x. Every primitive fits in a sphere of radius
`BOUND_RADIUS` around the origin, well inside DreamFusion's NeRF bounding sphere (radius 1.4,
§3.1) and inside the view of A.2's cameras (distance 1 to 1.5, focal 0.7 to 1.35 widths).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from sds_core.api import VIEWS, SdsError

BOUND_RADIUS = 0.45


def _box(p: Tensor, half: Tensor) -> Tensor:
    q = p.abs() - half
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


def _sdf_sphere(p: Tensor) -> Tensor:
    return p.norm(dim=-1) - 0.3


def _sdf_cube(p: Tensor) -> Tensor:
    return _box(p, p.new_tensor([0.22, 0.22, 0.22]))


def _convex_polygon_2d(q: Tensor, vertices: Tensor) -> Tensor:
    """Signed distance of 2D points (..., 2) to a convex polygon with counter-clockwise vertices (V, 2)."""
    a = vertices
    b = torch.roll(vertices, -1, dims=0)
    edge = b - a  # (V, 2)
    rel = q.unsqueeze(-2) - a  # (..., V, 2)
    h = ((rel * edge).sum(-1) / (edge * edge).sum(-1)).clamp(0, 1)
    dist = (rel - h.unsqueeze(-1) * edge).norm(dim=-1).min(dim=-1).values
    # outward normal of a counter-clockwise edge (ex, ey) is (ey, -ex)
    normal = torch.stack([edge[:, 1], -edge[:, 0]], dim=-1)
    normal = normal / normal.norm(dim=-1, keepdim=True)
    plane = (rel * normal).sum(-1).max(dim=-1).values
    return torch.where(plane > 0, dist, plane)


def _revolved(p: Tensor, profile: list[tuple[float, float]]) -> Tensor:
    """A solid of revolution around z from a convex (radius, z) profile mirrored about the axis."""
    radial = p[..., :2].norm(dim=-1)
    vertices = p.new_tensor(profile)
    return _convex_polygon_2d(torch.stack([radial, p[..., 2]], dim=-1), vertices)


def _sdf_cylinder(p: Tensor) -> Tensor:
    r, h = 0.22, 0.25
    return _revolved(p, [(-r, -h), (r, -h), (r, h), (-r, h)])


def _sdf_cone(p: Tensor) -> Tensor:
    r, bottom, apex = 0.28, -0.22, 0.3
    return _revolved(p, [(-r, bottom), (r, bottom), (0.0, apex)])


def _sdf_torus(p: Tensor) -> Tensor:
    # standing up, its axis along x: the front view looks through the hole
    major, minor = 0.24, 0.09
    ring = p[..., 1:].norm(dim=-1) - major
    return torch.stack([ring, p[..., 0]], dim=-1).norm(dim=-1) - minor


def _sdf_capsule(p: Tensor) -> Tensor:
    # lying along y: long from the front, round from the side
    half, radius = 0.2, 0.13
    closest = torch.stack([torch.zeros_like(p[..., 0]), p[..., 1].clamp(-half, half), torch.zeros_like(p[..., 2])], -1)
    return (p - closest).norm(dim=-1) - radius


SDFS: dict[str, Callable[[Tensor], Tensor]] = {
    "sphere": _sdf_sphere,
    "cube": _sdf_cube,
    "cylinder": _sdf_cylinder,
    "cone": _sdf_cone,
    "torus": _sdf_torus,
    "capsule": _sdf_capsule,
}
PRIMITIVES: tuple[str, ...] = tuple(SDFS)
# Objects with a front (opt-in, issue 38): they differ front (+x) to back, so a run that grows a
# second front behind them (the Janus problem) can be measured against the truth. They are not
# in PRIMITIVES (the default world of the prior's unconditional set and of the learned priors'
# training data stays as it was); the grammar names them and the prior serves them.
BIRD_BODY_RADIUS = 0.25  # a sphere at the origin
BIRD_NOSE_CENTRE = (0.3, 0.0, 0.0)  # a smaller sphere on +x, the front: its tip at x = 0.42
BIRD_NOSE_RADIUS = 0.12


def _sdf_bird_body(p: Tensor) -> Tensor:
    return p.norm(dim=-1) - BIRD_BODY_RADIUS


def sdf_bird_nose(p: Tensor) -> Tensor:
    """The bird's nose sphere alone (it overlaps the body; the nose part proper is nose minus body)."""
    return (p - p.new_tensor(BIRD_NOSE_CENTRE)).norm(dim=-1) - BIRD_NOSE_RADIUS


def _sdf_bird(p: Tensor) -> Tensor:
    # the union of two SDFs is their minimum: exact outside, and its sign is exact everywhere
    return torch.minimum(_sdf_bird_body(p), sdf_bird_nose(p))


# the marked cube: the cube, its front face (+x) painted in MARK_RGB (near black: neither a colour
# of the world nor the white background)
MARK_RGB = (0.1, 0.1, 0.1)


def on_front_face(p: Tensor) -> Tensor:
    """(...,) bool: the marked cube's front face region, the pyramid x >= |y|, |z|, x > 0 (on the
    cube's surface: exactly its face x = half)."""
    x = p[..., 0]
    return (x > 0) & (x >= p[..., 1].abs()) & (x >= p[..., 2].abs())


FRONT_SDFS: dict[str, Callable[[Tensor], Tensor]] = {"bird": _sdf_bird, "marked cube": _sdf_cube}
# the objects with a front whose front is a colour: where on the surface it is painted MARK_RGB
MARKS: dict[str, Callable[[Tensor], Tensor]] = {"marked cube": on_front_face}
FRONT_PRIMITIVES: tuple[str, ...] = tuple(FRONT_SDFS)
# every primitive the grammar names: the default world, then the objects with a front
ALL_SDFS: dict[str, Callable[[Tensor], Tensor]] = {**SDFS, **FRONT_SDFS}
SYNONYMS = {"ball": "sphere", "box": "cube", "donut": "torus", "doughnut": "torus", "pill": "capsule"}

# albedo in [0, 1]; the background (white by default) is not among them
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.1, 0.1),
    "green": (0.1, 0.65, 0.15),
    "blue": (0.1, 0.2, 0.85),
    "yellow": (0.95, 0.8, 0.1),
    "purple": (0.55, 0.15, 0.7),
    "orange": (0.95, 0.45, 0.05),
}


@dataclass(frozen=True)
class ShapeObject:
    """One object of the world: a primitive in a colour, with its exact SDF (the ground truth)."""

    primitive: str
    colour: str

    @property
    def rgb(self) -> tuple[float, float, float]:
        return COLOURS[self.colour]

    @property
    def prompt(self) -> str:
        return f"a {self.colour} {self.primitive}"

    def sdf(self, points: Tensor) -> Tensor:
        """Signed distance (negative inside) of points (..., 3) to the surface."""
        return ALL_SDFS[self.primitive](points)

    def contains(self, points: Tensor) -> Tensor:
        return self.sdf(points) <= 0

    @property
    def has_front(self) -> bool:
        """Whether the object differs front (+x) to back (`FRONT_PRIMITIVES`)."""
        return self.primitive in FRONT_SDFS

    def front_part(self, points: Tensor) -> Tensor:
        """(...,) bool: points in the object's distinctive front part (the bird's nose outside its
        body); all False for an object without a front."""
        if self.primitive == "bird":
            return (sdf_bird_nose(points) <= 0) & (_sdf_bird_body(points) > 0)
        return torch.zeros(points.shape[:-1], dtype=torch.bool, device=points.device)

    def albedo(self, points: Tensor) -> Tensor:
        """The true colour at points (..., 3): uniform, but MARK_RGB on a marked object's mark."""
        body = points.new_tensor(self.rgb).expand(*points.shape[:-1], 3)
        if self.primitive not in MARKS:
            return body
        mark = MARKS[self.primitive](points)[..., None]
        return torch.where(mark, points.new_tensor(MARK_RGB), body)


@dataclass(frozen=True)
class ParsedPrompt:
    obj: ShapeObject
    view: str | None  # the view named in the prompt ("a blue torus, side view"), if any


def vocabulary() -> str:
    return (
        f"colours {', '.join(COLOURS)}; shapes {', '.join(PRIMITIVES)}; "
        f"shapes with a front {', '.join(FRONT_PRIMITIVES)}; "
        f"optional view suffix ', {{{'|'.join(VIEWS)}}} view'"
    )


_PROMPT = re.compile(
    r"^\s*(?:(?:a|an|the|one)\s+)?(?P<colour>[a-z]+)\s+(?P<shape>[a-z]+(?:\s+[a-z]+)?)"
    r"(?:\s*,\s*(?P<view>[a-z]+)\s+view)?\s*\.?\s*$",
    re.IGNORECASE,
)


def parse_prompt(prompt: str) -> ParsedPrompt:
    """ "a red cube" or "a blue torus, side view" -> the object (and view); else a one-sentence SdsError."""
    match = _PROMPT.match(prompt)
    if match:
        colour = match.group("colour").lower()
        shape = " ".join(match.group("shape").lower().split())  # "marked  cube" -> "marked cube"
        shape = SYNONYMS.get(shape, shape)
        view = match.group("view")
        view = view.lower() if view else None
        if colour in COLOURS and shape in ALL_SDFS and (view is None or view in VIEWS):
            return ParsedPrompt(ShapeObject(shape, colour), view)
    raise SdsError(
        f'the shapes prior cannot draw {prompt!r}; it knows prompts like "a red cube" or '
        f'"a blue torus, side view" with {vocabulary()}'
    )


def all_objects() -> list[ShapeObject]:
    return [ShapeObject(p, c) for p in PRIMITIVES for c in COLOURS]


def front_objects() -> list[ShapeObject]:
    """Every object with a front, in every colour (not in `all_objects`: opt-in)."""
    return [ShapeObject(p, c) for p in FRONT_PRIMITIVES for c in COLOURS]


def world_primitives(obj: ShapeObject) -> tuple[str, ...]:
    """The primitives of the world the prior serves `obj` in: the default world, and the objects
    with a front after it when `obj` is one (so every default prompt keeps its references)."""
    return PRIMITIVES + FRONT_PRIMITIVES if obj.has_front else PRIMITIVES
