"""Objects with a front (issue 38): the bird and the marked cube, their grammar, exact SDFs, colours
and traces, and the prior serving them while the default world (its primitives, references and
learned training data) stays as it was."""

from __future__ import annotations

import pytest

pytest.importorskip("sds_shapes")

import torch

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_core.errors import SdsError
from sds_shapes.config import ShapesConfig
from sds_shapes.guidance import ShapesGuidance
from sds_shapes.render import trace_buffers, trace_layers
from sds_shapes.trace import HITS, NORMALS
from sds_shapes.world import (
    BOUND_RADIUS,
    COLOURS,
    FRONT_PRIMITIVES,
    MARK_RGB,
    PRIMITIVES,
    ShapeObject,
    all_objects,
    front_objects,
    parse_prompt,
    world_primitives,
)

SMALL = {"resolution": 16, "views": 16, "supersample": 1}
DEFAULT_WORLD = ("sphere", "cube", "cylinder", "cone", "torus", "capsule")


def test_the_grammar_names_the_bird_in_every_colour_and_the_default_world_is_unchanged() -> None:
    assert PRIMITIVES == DEFAULT_WORLD and FRONT_PRIMITIVES == ("bird", "marked cube")
    assert len(all_objects()) == len(DEFAULT_WORLD) * len(COLOURS)  # the learned priors' world
    assert {o.colour for o in front_objects()} == set(COLOURS)
    parsed = parse_prompt("A Yellow bird, side view")
    assert parsed.obj == ShapeObject("bird", "yellow") and parsed.view == "side" and parsed.obj.has_front
    assert not parse_prompt("a red cube").obj.has_front
    marked = parse_prompt("the blue Marked  cube, front view")
    assert marked.obj == ShapeObject("marked cube", "blue") and marked.view == "front" and marked.obj.has_front
    assert marked.obj.prompt == "a blue marked cube"
    assert world_primitives(ShapeObject("cube", "red")) == DEFAULT_WORLD
    assert world_primitives(parsed.obj) == (*DEFAULT_WORLD, *FRONT_PRIMITIVES)
    with pytest.raises(SdsError, match="bird"):
        parse_prompt("a red dragon")


def test_the_bird_differs_front_to_back_and_fits_the_world_bound() -> None:
    bird = ShapeObject("bird", "red")
    nose, tail = torch.tensor([[0.4, 0.0, 0.0]]), torch.tensor([[-0.4, 0.0, 0.0]])
    assert bool(bird.contains(nose)) and not bool(bird.contains(tail))
    assert bool(bird.front_part(nose)) and not bool(bird.front_part(torch.zeros(1, 3)))
    assert not ShapeObject("sphere", "red").front_part(nose).any()
    directions = torch.nn.functional.normalize(torch.randn(2000, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert not bird.contains(directions * BOUND_RADIUS).any()  # inside the world's bounding sphere
    torch.testing.assert_close(bird.albedo(nose), torch.tensor([COLOURS["red"]]))


def test_the_bird_is_traced_exactly_against_its_sdf() -> None:
    """As the default primitives (tests/shapes/test_shapes.py): hits on the surface, coverage equal
    to a dense march of the SDF, normals along its gradient."""
    bird = ShapeObject("bird", "red")
    origins, dirs = CameraSampler(CameraConfig(width=24, height=24)).sample(4, torch.Generator().manual_seed(0)).rays()
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    t = HITS["bird"](o, d)
    hit = torch.isfinite(t)
    points = o[hit] + t[hit, None] * d[hit]
    assert hit.sum() > 100 and bird.sdf(points).abs().max() < 1e-4
    ts = torch.linspace(0.0, 3.0, 1501)
    inside = (bird.sdf(o[:, None] + ts[None, :, None] * d[:, None]) <= 0).any(dim=1)
    assert (inside != hit).sum() <= 2
    grad = torch.stack([bird.sdf(points + e) - bird.sdf(points - e) for e in torch.eye(3) * 1e-3], dim=-1)
    cos = (NORMALS["bird"](points) * grad / grad.norm(dim=-1, keepdim=True)).sum(-1)
    assert (cos > 0.999).float().mean() > 0.98  # all but the crease where nose meets body


def test_the_bird_shows_its_nose_on_the_side_it_faces() -> None:
    """Seen from the side (azimuth 90: the camera on +y, sds_core.cameras), the nose sticks out
    towards +x: the silhouette is lopsided, where the plain sphere's is mirror symmetric."""
    fixed = {"target_std": 0.0, "position_jitter": 0.0, "up_std": 0.0}
    side = CameraConfig(width=32, height=32, elevation_range=(0.0, 0.0), azimuth_range=(90.0, 90.0), **fixed)
    cams = CameraSampler(side).sample(1, torch.Generator().manual_seed(0))
    coverage, _ = trace_buffers(cams, primitives=("sphere", "bird"))
    sphere, bird = coverage[0, 0], coverage[1, 0]
    assert bird.sum() > 100 and sphere.sum() > 100
    assert (sphere - sphere.flip(-1)).abs().sum() <= 2  # up to rays grazing the silhouette
    assert (bird - bird.flip(-1)).abs().sum() > 10  # the nose makes the side view lopsided


def _guidance(context_factory, prompt: str, **options) -> ShapesGuidance:
    return ShapesGuidance(ShapesConfig(**{**SMALL, **options}), context_factory(prompt))


def test_the_exact_prior_serves_the_bird_and_keeps_the_default_world(context_factory) -> None:
    from sds_core.protocols import Render

    cube = _guidance(context_factory, "a red cube", references="fixed")
    assert cube.primitives == DEFAULT_WORLD and cube.views.coverage.shape[0] == len(DEFAULT_WORLD)
    with pytest.raises(SdsError, match="front"):
        cube.reference_images("albedo", ShapeObject("bird", "red"))
    bird = _guidance(context_factory, "a red bird", references="fixed")
    views = bird.views
    torch.testing.assert_close(views.coverage[: len(DEFAULT_WORLD)], cube.views.coverage)  # same default world
    images = bird.reference_images("albedo")
    assert images.shape == (16, 3, 16, 16)
    x = images[:2] * 2 - 1
    render = Render(image=images[:2], space="rgb", shading=("albedo", "albedo"))
    cond = bird.condition(render, None)
    index = bird.primitives.index("bird")
    ref = bird._reference_set("albedo")
    assert set(ref.primitive[cond.masks[0]].tolist()) == {index}
    x0_c, _ = bird.x0(x, torch.tensor([1, 1]), cond)  # almost no noise: the bird's own views
    torch.testing.assert_close(x0_c, x, atol=1e-3, rtol=0)
    cams = CameraSampler(CameraConfig(width=16, height=16)).sample(1, torch.Generator().manual_seed(1))
    camera = _guidance(context_factory, "a red bird")
    (own,) = camera.camera_references(cams, ["lambertian"])
    assert own.denoiser.size == len(camera.primitives) * len(COLOURS) * 7


def test_the_true_mesh_of_the_bird_has_its_nose_on_the_front() -> None:
    pytest.importorskip("trimesh")
    pytest.importorskip("skimage")
    from sds_shapes.true_mesh import true_mesh

    mesh = true_mesh(ShapeObject("bird", "green"), resolution=32)
    x = mesh.vertices[:, 0]  # y-up files keep x, the front
    assert 0.39 < x.max() < 0.43 and -0.26 < x.min() < -0.22  # the nose tip at 0.42, the back at -0.25
    assert (mesh.visual.vertex_colors[:, :3] == [round(255 * c) for c in COLOURS["green"]]).all()


def _fixed_camera(azimuth: float, side: int = 24) -> CameraSampler:
    fixed = {"target_std": 0.0, "position_jitter": 0.0, "up_std": 0.0, "elevation_range": (0.0, 0.0)}
    return CameraSampler(CameraConfig(width=side, height=side, azimuth_range=(azimuth, azimuth), **fixed))


def test_the_marked_cube_is_the_cube_with_its_front_face_in_the_mark_colour() -> None:
    marked, cube = ShapeObject("marked cube", "red"), ShapeObject("cube", "red")
    points = torch.rand(4000, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    assert torch.equal(marked.sdf(points), cube.sdf(points))
    faces = torch.tensor([[0.22, 0.1, -0.05], [-0.22, 0.1, -0.05], [0.1, 0.22, 0.0], [0.05, 0.0, -0.22]])
    expected = torch.tensor([MARK_RGB, *[COLOURS["red"]] * 3])
    torch.testing.assert_close(marked.albedo(faces), expected)
    torch.testing.assert_close(cube.albedo(faces), torch.tensor([COLOURS["red"]] * 4))


def test_the_mark_is_traced_on_the_front_face_only() -> None:
    """Seen from the front (azimuth 0, the camera on +x) every cube pixel is the mark; from the
    back none is; trace_layers' coverage and lit are trace_buffers' exactly."""
    primitives = ("cube", "marked cube")
    for azimuth, share in ((0.0, 1.0), (180.0, 0.0)):
        cams = _fixed_camera(azimuth).sample(1, torch.Generator().manual_seed(0))
        coverage, lit, marks = trace_layers(cams, primitives=primitives)
        assert marks is not None
        plain = trace_buffers(cams, primitives=primitives)
        assert torch.equal(coverage, plain[0]) and torch.equal(lit, plain[1])
        assert torch.equal(coverage[0], coverage[1]) and coverage[1].sum() > 50
        assert marks[0][0].sum() == 0  # the plain cube has no mark
        assert float(marks[0][1].sum() / coverage[1].sum()) == share
        assert torch.equal(marks[1][1], torch.where(marks[0][1] > 0, lit[1], 0.0))
    assert trace_layers(cams, primitives=DEFAULT_WORLD)[2] is None


def test_the_exact_prior_paints_the_mark_on_the_marked_cube_references(context_factory) -> None:
    from sds_core.protocols import Render

    guidance = _guidance(context_factory, "a green marked cube", references="fixed")
    views = guidance.views
    images = guidance.reference_images("albedo")
    index, cube = guidance.primitives.index("marked cube"), ShapeObject("cube", "green")
    assert views.marks is not None
    mark = views.marks[0][index] == 1  # pixels wholly on the mark
    assert mark.any() and torch.equal(views.coverage[index], views.coverage[guidance.primitives.index("cube")])
    painted = images.permute(0, 2, 3, 1)[mark]
    torch.testing.assert_close(painted, torch.tensor(MARK_RGB).expand_as(painted))
    assert not torch.equal(images, guidance.reference_images("albedo", cube))  # the mark tells them apart
    shade = guidance.reference_images("textureless")  # the mark is a colour: no trace without albedo
    torch.testing.assert_close(shade, guidance.reference_images("textureless", cube))
    render = Render(image=images[:2], space="rgb", shading=("albedo", "albedo"))
    x0_c, _ = guidance.x0(images[:2] * 2 - 1, torch.tensor([1, 1]), guidance.condition(render, None))
    torch.testing.assert_close(x0_c, images[:2] * 2 - 1, atol=1e-3, rtol=0)
    cams = _fixed_camera(0.0, side=16).sample(1, torch.Generator().manual_seed(0))
    camera = _guidance(context_factory, "a green marked cube")
    (own,) = camera.camera_references(cams, ["albedo"])
    refs = (own.denoiser.centred + own.denoiser.mean).view(-1, 3, 16, 16)[own.primitive == index]
    assert ((refs + 1) / 2 - torch.tensor(MARK_RGB).view(3, 1, 1)).abs().amax(dim=1).amin() < 1e-5


def test_the_true_mesh_of_the_marked_cube_carries_the_mark() -> None:
    pytest.importorskip("trimesh")
    pytest.importorskip("skimage")
    from sds_shapes.true_mesh import true_mesh

    mesh = true_mesh(ShapeObject("marked cube", "yellow"), resolution=32)
    colours, x = mesh.visual.vertex_colors[:, :3], mesh.vertices[:, 0]
    mark = [round(255 * c) for c in MARK_RGB]
    assert (colours[x > 0.219] == mark).all() and not (colours[x < 0.2] == mark).all(axis=1).any()
