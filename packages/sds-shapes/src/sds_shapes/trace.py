"""Closed-form ray casting of the `shapes` primitives, batched in torch.

Each primitive of `world.py` has an exact first hit: the sphere, the cylinder, the cone and the
capsule are quadrics (and planes) solved in closed form, the cube is a slab test, and the torus is
a quartic solved in closed form (Ferrari, float64, polished by Newton steps); the bird (an object
with a front, `world.FRONT_PRIMITIVES`) is the union of two spheres, the nearer of their hits.
Hand-written because no maintained library casts rays against these analytic solids, batched, in torch (trimesh and
Open3D cast against triangle meshes, in numpy, and a mesh is not the exact surface); sphere
tracing an SDF needs ~100 SDF evaluations per ray. The constants are `world.py`'s SDFs' (the
tests check the hits against those SDFs).

`HITS[primitive](origins, dirs)` takes rays (N, 3) with unit directions and returns the distance
of the first hit (N,), +inf where the ray misses; hits behind the origin (t <= 0) do not count.
`NORMALS[primitive](points)` gives the outward unit normal at surface points.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from sds_shapes.world import BIRD_BODY_RADIUS, BIRD_NOSE_CENTRE, BIRD_NOSE_RADIUS

INF = math.inf


def dot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise dot product of (N, 3) tensors (three products: faster than a reduction over 3)."""
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def _first_positive(*candidates: Tensor) -> Tensor:
    """The smallest positive candidate distance per ray (+inf when none)."""
    stacked = torch.stack(candidates, dim=-1)
    return stacked.masked_fill(stacked <= 0, INF).min(dim=-1).values


def _quadratic(a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Both roots of a t^2 + 2 b t + c = 0 (near, far); NaN-free, +inf when there is none."""
    disc = b * b - a * c
    ok = (disc >= 0) & (a.abs() > 1e-12)
    root = disc.clamp_min(0).sqrt()
    safe_a = torch.where(ok, a, torch.ones_like(a))
    t0, t1 = (-b - root) / safe_a, (-b + root) / safe_a
    near, far = torch.minimum(t0, t1), torch.maximum(t0, t1)
    return near.masked_fill(~ok, INF), far.masked_fill(~ok, INF)


def _within(t: Tensor, coordinate: Tensor, low: float, high: float) -> Tensor:
    """t where the hit's coordinate lies in [low, high], else +inf."""
    return t.masked_fill((coordinate < low) | (coordinate > high), INF)


def _plane_disk(o: Tensor, d: Tensor, axis: int, level: float, u: int, v: int, radius: float) -> Tensor:
    """The hit of the disk {x_axis = level, x_u^2 + x_v^2 <= radius^2}."""
    dz = d[:, axis]
    safe = torch.where(dz.abs() > 1e-12, dz, torch.ones_like(dz))
    t = ((level - o[:, axis]) / safe).masked_fill(dz.abs() <= 1e-12, INF)
    p = o + torch.where(torch.isfinite(t), t, 0.0)[:, None] * d
    inside = p[:, u] ** 2 + p[:, v] ** 2 <= radius**2
    return t.masked_fill(~inside, INF)


def _cylinder_side(o: Tensor, d: Tensor, axis: int, radius: float, low: float, high: float) -> tuple[Tensor, Tensor]:
    """Near and far hits of the side of the cylinder of `radius` around `axis`, for low <= x_axis <= high."""
    u, v = [i for i in range(3) if i != axis]
    a = d[:, u] ** 2 + d[:, v] ** 2
    b = o[:, u] * d[:, u] + o[:, v] * d[:, v]
    c = o[:, u] ** 2 + o[:, v] ** 2 - radius**2
    near, far = _quadratic(a, b, c)
    z_near = o[:, axis] + torch.where(torch.isfinite(near), near, 0.0) * d[:, axis]
    z_far = o[:, axis] + torch.where(torch.isfinite(far), far, 0.0) * d[:, axis]
    return _within(near, z_near, low, high), _within(far, z_far, low, high)


def _sphere_hits(o: Tensor, d: Tensor, center: tuple[float, float, float], radius: float) -> Tensor:
    oc = o - o.new_tensor(center)
    near, far = _quadratic(torch.ones_like(oc[:, 0]), dot(oc, d), dot(oc, oc) - radius**2)
    return _first_positive(near, far)


def hit_sphere(o: Tensor, d: Tensor) -> Tensor:
    return _sphere_hits(o, d, (0.0, 0.0, 0.0), 0.3)


def hit_cube(o: Tensor, d: Tensor, half: float = 0.22) -> Tensor:
    """The slab test of the axis-aligned box [-half, half]^3."""
    safe = torch.where(d.abs() > 1e-12, d, torch.full_like(d, 1e-12))
    t0, t1 = (-half - o) / safe, (half - o) / safe
    t_near = torch.minimum(t0, t1).max(dim=-1).values
    t_far = torch.maximum(t0, t1).min(dim=-1).values
    hit = t_near <= t_far
    return _first_positive(t_near, t_far).masked_fill(~hit, INF)


def hit_cylinder(o: Tensor, d: Tensor, radius: float = 0.22, half: float = 0.25) -> Tensor:
    near, far = _cylinder_side(o, d, 2, radius, -half, half)
    top = _plane_disk(o, d, 2, half, 0, 1, radius)
    bottom = _plane_disk(o, d, 2, -half, 0, 1, radius)
    return _first_positive(near, far, top, bottom)


def hit_cone(o: Tensor, d: Tensor, radius: float = 0.28, bottom: float = -0.22, apex: float = 0.3) -> Tensor:
    """The solid cone: x^2 + y^2 = (k (apex - z))^2 for bottom <= z <= apex, and its base disk."""
    k2 = (radius / (apex - bottom)) ** 2
    h = apex - o[:, 2]  # apex - z along the ray is h - t d_z
    a = d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * d[:, 2] ** 2
    b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1] + k2 * h * d[:, 2]
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - k2 * h**2
    near, far = _quadratic(a, b, c)
    z = [o[:, 2] + torch.where(torch.isfinite(t), t, 0.0) * d[:, 2] for t in (near, far)]
    side = [_within(t, zt, bottom, apex) for t, zt in zip((near, far), z, strict=True)]
    base = _plane_disk(o, d, 2, bottom, 0, 1, radius)
    return _first_positive(*side, base)


def hit_capsule(o: Tensor, d: Tensor, half: float = 0.2, radius: float = 0.13) -> Tensor:
    near, far = _cylinder_side(o, d, 1, radius, -half, half)
    ends = [_sphere_hits(o, d, (0.0, y, 0.0), radius) for y in (-half, half)]
    return _first_positive(near, far, *ends)


def _largest_cubic_root(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """The largest real root of m^3 + a m^2 + b m + c = 0 (Cardano / Viete), polished by Newton."""
    p = b - a * a / 3
    q = 2 * a**3 / 27 - a * b / 3 + c
    disc = (q / 2) ** 2 + (p / 3) ** 3
    root = disc.clamp_min(0).sqrt()
    one = torch.sign(-q / 2 + root) * (-q / 2 + root).abs().pow(1 / 3)
    one = one + torch.sign(-q / 2 - root) * (-q / 2 - root).abs().pow(1 / 3)
    safe_p = torch.where(p < 0, p, -torch.ones_like(p))
    arg = (3 * q / (2 * safe_p) * (-3 / safe_p).sqrt()).clamp(-1, 1)
    three = 2 * (-safe_p / 3).sqrt() * torch.cos(torch.acos(arg) / 3)
    s = torch.where(disc > 0, one, torch.where(p < 0, three, torch.zeros_like(p)))
    m = s - a / 3
    for _ in range(2):
        f = ((m + a) * m + b) * m + c
        df = (3 * m + 2 * a) * m + b
        m = m - f / torch.where(df.abs() > 1e-30, df, torch.ones_like(df))
    return m


def _quartic_roots(c3: Tensor, c2: Tensor, c1: Tensor, c0: Tensor) -> Tensor:
    """The real roots of t^4 + c3 t^3 + c2 t^2 + c1 t + c0 = 0, (N, 4), NaN where complex (Ferrari)."""
    p = c2 - 3 * c3**2 / 8
    q = c1 - c3 * c2 / 2 + c3**3 / 8
    r = c0 - c3 * c1 / 4 + c3**2 * c2 / 16 - 3 * c3**4 / 256
    # y^4 + p y^2 + q y + r = (y^2 + p/2 + m)^2 - (2m y^2 - q y + m^2 + m p + p^2/4 - r), a square
    # when 8 m^3 + 8 p m^2 + (2 p^2 - 8 r) m - q^2 = 0 (its largest root is >= 0)
    m = _largest_cubic_root(p, p * p / 4 - r, -q * q / 8).clamp_min(0)
    biquadratic = (m < 1e-12)[:, None]  # q = 0: y^2 = (-p +- sqrt(p^2 - 4 r)) / 2
    w = (2 * m).sqrt()
    sign = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=m.dtype, device=m.device)
    branch = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=m.dtype, device=m.device)
    # y^2 - sign w y + (p/2 + m + sign q / (2 w)) = 0, both branches of both signs at once (N, 4)
    const = (p / 2 + m)[:, None] + sign * (q / torch.where(w > 0, 2 * w, 1.0))[:, None]
    y = (sign * w[:, None] + branch * (w * w)[:, None].sub(4 * const).sqrt()) / 2
    y_bi = branch * ((-p[:, None] + sign * (p * p - 4 * r).sqrt()[:, None]) / 2).sqrt()
    t = torch.where(biquadratic, y_bi, y) - c3[:, None] / 4
    c3, c2, c1, c0 = c3[:, None], c2[:, None], c1[:, None], c0[:, None]
    for _ in range(2):  # polish against cancellation
        f = (((t + c3) * t + c2) * t + c1) * t + c0
        df = ((4 * t + 3 * c3) * t + 2 * c2) * t + c1
        t = t - f / torch.where(df.abs() > 1e-30, df, 1.0)
    return t


def hit_torus(o: Tensor, d: Tensor, major: float = 0.24, minor: float = 0.09) -> Tensor:
    """The torus around the x axis: (|p|^2 + R^2 - r^2)^2 - 4 R^2 (y^2 + z^2) = 0, a quartic in t,
    solved in closed form (Ferrari) in float64 from the ray's entry into the bounding sphere."""
    o64, d64 = o.double(), d.double()
    b_s = dot(o64, d64)
    disc = b_s * b_s - dot(o64, o64) + (major + minor) ** 2
    near = (-b_s - disc.clamp_min(0).sqrt()).clamp_min(0)
    o64 = o64 + near[:, None] * d64  # shift the origin next to the torus (better conditioned)
    b = dot(o64, d64)
    q = dot(o64, o64) + major**2 - minor**2
    oy, oz, dy, dz = o64[:, 1], o64[:, 2], d64[:, 1], d64[:, 2]
    r4 = 4 * major**2
    # (t^2 + 2 b t + q)^2 - 4 R^2 ((o_y + t d_y)^2 + (o_z + t d_z)^2), |d| = 1
    roots = _quartic_roots(
        4 * b,
        4 * b * b + 2 * q - r4 * (dy * dy + dz * dz),
        4 * b * q - 2 * r4 * (oy * dy + oz * dz),
        q * q - r4 * (oy * oy + oz * oz),
    )
    t = roots.masked_fill(~(roots + near[:, None] > 0), INF).min(dim=-1).values + near  # NaN: complex
    return t.masked_fill(disc <= 0, INF).to(o.dtype)


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _on(level: Tensor, target: float) -> Tensor:
    """(N, 1) bool: the hit lies on a plane (a cap, a base): within float error of it."""
    return ((level - target).abs() < 1e-5)[:, None]


def normal_sphere(p: Tensor) -> Tensor:
    return _unit(p)


def normal_cube(p: Tensor) -> Tensor:
    axis = p.abs().argmax(dim=-1, keepdim=True)
    return torch.zeros_like(p).scatter(-1, axis, p.gather(-1, axis).sign())


def normal_cylinder(p: Tensor, half: float = 0.25) -> Tensor:
    side = _unit(p * p.new_tensor([1.0, 1.0, 0.0]))
    cap = p.new_tensor([0.0, 0.0, 1.0]) * p[:, 2:].sign()
    return torch.where(_on(p[:, 2].abs(), half), cap, side)


def normal_cone(p: Tensor, radius: float = 0.28, bottom: float = -0.22, apex: float = 0.3) -> Tensor:
    k2 = (radius / (apex - bottom)) ** 2
    side = _unit(torch.stack([p[:, 0], p[:, 1], k2 * (apex - p[:, 2])], dim=-1))
    return torch.where(_on(p[:, 2], bottom), p.new_tensor([0.0, 0.0, -1.0]), side)


def normal_torus(p: Tensor, major: float = 0.24) -> Tensor:
    ring = p[:, 1:] - major * _unit(p[:, 1:])  # from the tube's centre circle
    return _unit(torch.cat([p[:, :1], ring], dim=-1))


def normal_capsule(p: Tensor, half: float = 0.2) -> Tensor:
    axis = torch.zeros_like(p)
    axis[:, 1] = p[:, 1].clamp(-half, half)
    return _unit(p - axis)


def hit_bird(o: Tensor, d: Tensor) -> Tensor:
    """The union of the body and nose spheres: the nearer of the two first hits."""
    body = _sphere_hits(o, d, (0.0, 0.0, 0.0), BIRD_BODY_RADIUS)
    return torch.minimum(body, _sphere_hits(o, d, BIRD_NOSE_CENTRE, BIRD_NOSE_RADIUS))


def normal_bird(p: Tensor) -> Tensor:
    """The normal of the sphere (body or nose) the surface point lies on: the one nearer to it."""
    centre = p.new_tensor(BIRD_NOSE_CENTRE)
    on_nose = ((p - centre).norm(dim=-1) - BIRD_NOSE_RADIUS).abs() < (p.norm(dim=-1) - BIRD_BODY_RADIUS).abs()
    return torch.where(on_nose[:, None], _unit(p - centre), _unit(p))


HITS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "sphere": hit_sphere,
    "cube": hit_cube,
    "cylinder": hit_cylinder,
    "cone": hit_cone,
    "torus": hit_torus,
    "capsule": hit_capsule,
    "bird": hit_bird,  # objects with a front (world.FRONT_PRIMITIVES)
    "marked cube": hit_cube,  # the cube: its front face differs in colour only (world.MARKS)
}
# outward unit normals at points on each surface (the SDF's gradient, in closed form)
NORMALS: dict[str, Callable[[Tensor], Tensor]] = {
    "sphere": normal_sphere,
    "cube": normal_cube,
    "cylinder": normal_cylinder,
    "cone": normal_cone,
    "torus": normal_torus,
    "capsule": normal_capsule,
    "bird": normal_bird,
    "marked cube": normal_cube,
}
