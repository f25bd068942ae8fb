"""The `shapes` prior: world, exact denoiser, conditioning, errors, metrics, and SDS convergence."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("sds_shapes")

import torch

from sds_core.cameras import view_labels
from sds_core.config import CameraConfig
from sds_core.errors import SdsError
from sds_core.protocols import Guidance, Render
from sds_shapes import metrics
from sds_shapes.config import ShapesConfig
from sds_shapes.denoiser import ExactDenoiser
from sds_shapes.guidance import ShapesGuidance, sd_alphas_cumprod
from sds_shapes.world import COLOURS, PRIMITIVES, ShapeObject, parse_prompt

SMALL = {"resolution": 16, "views": 16, "supersample": 1}


def _shapes(context_factory, prompt: str = "a red cube", **options) -> ShapesGuidance:
    return ShapesGuidance(ShapesConfig(**{**SMALL, **options}), context_factory(prompt))


def _brute_force_x0(z, alpha_bar, refs, mask=None):
    """x0_hat by the definition, in float64, one sample at a time."""
    out = []
    flat = refs.reshape(len(refs), -1).double()
    for i in range(len(z)):
        a, s2 = alpha_bar[i].double().sqrt(), 1 - alpha_bar[i].double()
        d2 = (z[i].reshape(1, -1).double() - a * flat).pow(2).sum(1)
        logits = -d2 / (2 * s2)
        if mask is not None:
            logits = logits.masked_fill(~mask[i], float("-inf"))
        out.append((torch.softmax(logits, 0)[:, None] * flat).sum(0))
    return torch.stack(out).view(-1, *refs.shape[1:])


def test_world_has_six_primitives_and_six_colours_with_exact_sdfs() -> None:
    assert len(PRIMITIVES) >= 6 and len(COLOURS) >= 6
    for primitive in PRIMITIVES:
        obj = ShapeObject(primitive, "red")
        inside = torch.tensor([[0.0, 0.24, 0.0]]) if primitive == "torus" else torch.zeros(1, 3)  # torus: hole
        assert bool(obj.contains(inside))
        far = torch.tensor([[2.0, 0.0, 0.0]])
        assert float(obj.sdf(far)) > 1.4
    cube = ShapeObject("cube", "red")
    points = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.1], [0.5, 0.5, 0.0]])
    torch.testing.assert_close(cube.sdf(points), torch.tensor([0.28, -0.12, (2 * 0.28**2) ** 0.5]))


def test_sd_schedule_matches_diffusers() -> None:
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    torch.testing.assert_close(sd_alphas_cumprod(), scheduler.alphas_cumprod.float())


def test_prompts_parse_and_unknown_prompts_list_the_vocabulary() -> None:
    assert parse_prompt("a red cube").obj == ShapeObject("cube", "red")
    parsed = parse_prompt("A Blue torus, side view")
    assert parsed.obj == ShapeObject("torus", "blue") and parsed.view == "side"
    for bad in ("a pink elephant", "a red cube, diagonal view", "cube"):
        with pytest.raises(SdsError) as info:
            parse_prompt(bad)
        message = str(info.value)
        assert bad in message and "red" in message and "torus" in message and "overhead" in message
        assert "\n" not in message


def test_denoiser_agrees_with_brute_force() -> None:
    torch.manual_seed(0)
    refs = torch.rand(40, 3, 4, 4) * 2 - 1
    denoiser = ExactDenoiser(refs, chunk_size=7)  # several chunks
    z = torch.randn(5, 3, 4, 4)
    alpha_bar = sd_alphas_cumprod()[torch.tensor([30, 200, 500, 800, 990])]
    mask = torch.rand(5, 40) < 0.3
    mask[:, 0] = True
    x0_masked, x0_all = denoiser.x0(z, alpha_bar, [mask, None])
    torch.testing.assert_close(x0_all.double(), _brute_force_x0(z, alpha_bar, refs), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x0_masked.double(), _brute_force_x0(z, alpha_bar, refs, mask), rtol=1e-4, atol=1e-4)
    eps = denoiser.epsilon(z, alpha_bar, x0_all)
    a = alpha_bar.view(-1, 1, 1, 1)
    torch.testing.assert_close(a.sqrt() * x0_all + (1 - a).sqrt() * eps, z)


def test_x0_tends_to_nearest_reference_at_t0_and_to_the_mean_at_t1(context_factory) -> None:
    guidance = _shapes(context_factory, "a green capsule", view_conditioning="none")
    render = Render(image=torch.zeros(2, 3, 16, 16), shading=["albedo", "albedo"])
    conditioning = guidance.condition(render, None)
    refs = guidance.reference_images("albedo") * 2 - 1
    torch.manual_seed(0)
    # t -> 0: a slightly perturbed reference is denoised to exactly that reference
    target = refs[[3, 11]]
    t0 = torch.tensor([0, 0])
    a0 = guidance.alphas_cumprod()[0]
    x_t = a0.sqrt() * target + (1 - a0).sqrt() * torch.randn_like(target)
    x0_c, _ = guidance.x0(x_t, t0, conditioning)
    torch.testing.assert_close(x0_c, target, atol=1e-4, rtol=0)
    # t -> 1 (alpha-bar -> 0): the posterior is the prior, the mean of the conditional set
    denoiser = guidance._reference_set("albedo").denoiser
    x0_far, x0_all = denoiser.x0(
        torch.randn(2, 3, 16, 16), torch.full((2,), 1e-9), [torch.stack(conditioning.masks), None]
    )
    torch.testing.assert_close(x0_far, refs.mean(0).expand(2, -1, -1, -1), atol=1e-3, rtol=0)
    all_refs = torch.cat([guidance.reference_images("albedo", ShapeObject(p, c)) for p in PRIMITIVES for c in COLOURS])
    torch.testing.assert_close(x0_all, (all_refs * 2 - 1).mean(0).expand(2, -1, -1, -1), atol=1e-3, rtol=0)


def test_guidance_protocol_background_and_ground_truth(context_factory) -> None:
    guidance = _shapes(context_factory, "a yellow cone", background=(0.2, 0.3, 0.4))
    assert isinstance(guidance, Guidance)
    assert guidance.space == "rgb" and guidance.resolution == 16 and guidance.default_guidance_scale == 5.0
    assert guidance.background == (0.2, 0.3, 0.4)
    assert guidance.ground_truth == ShapeObject("cone", "yellow")
    refs = guidance.reference_images("lambertian")
    corners = refs[:, :, 0, 0]
    assert torch.isclose(corners, torch.tensor([0.2, 0.3, 0.4])).all(dim=1).float().mean() > 0.5
    big = torch.rand(1, 3, 40, 40, requires_grad=True)
    x = guidance.prepare(Render(image=big))
    assert x.shape == (1, 3, 16, 16)
    x.sum().backward()
    assert big.grad is not None


def test_conditional_set_follows_prompt_view_shading_and_camera_window(context_factory) -> None:
    guidance = _shapes(context_factory, "a blue torus, side view")
    labels = guidance.views.views
    render = Render(image=torch.zeros(2, 3, 16, 16), shading=["lambertian", "textureless"])
    cond = guidance.condition(render, None)
    lam, tex = guidance._reference_set("lambertian"), guidance._reference_set("textureless")
    expected = [i for i, v in enumerate(labels) if v == "side"]
    chosen = cond.masks[0].nonzero().squeeze(1)
    assert sorted(lam.view[chosen].tolist()) == expected
    assert set(lam.primitive[chosen].tolist()) == {PRIMITIVES.index("torus")}
    assert set(lam.colour[chosen].tolist()) == {list(COLOURS).index("blue")}
    assert set(tex.primitive[cond.masks[1]].tolist()) == {PRIMITIVES.index("torus")}
    assert len(cond.masks[1]) == len(PRIMITIVES) * 16  # textureless references have no colour

    # camera-based view conditioning for a prompt without a view suffix
    fixed = {"references": "fixed"}
    window = _shapes(context_factory, "a blue torus", view_conditioning="window", window_degrees=40.0, **fixed)
    bucket = _shapes(context_factory, "a blue torus", view_conditioning="bucket", **fixed)
    from sds_core.cameras import CameraSampler

    cams = CameraSampler(CameraConfig()).orbit(2, elevation=20.0)
    render = Render(image=torch.zeros(2, 3, 16, 16), shading=["albedo", "albedo"])
    w = window.condition(render, cams)
    ref = window._reference_set("albedo")
    for i in range(2):
        dirs = window.views.directions[ref.view[w.masks[i]]]
        cam_dir = cams.position[i] / cams.position[i].norm()
        angles = torch.rad2deg(torch.acos((dirs @ cam_dir).clamp(-1, 1)))
        assert len(angles) == 1 or bool((angles <= 40.0 + 1e-3).all())  # else the nearest camera alone
    b = bucket.condition(render, cams)
    assert b.prompts == [f"a blue torus, {v} view" for v in cams.views]
    for i, view in enumerate(cams.views):
        assert {labels[j] for j in ref.view[b.masks[i]].tolist()} == {view}
    none = _shapes(context_factory, "a blue torus", view_conditioning="none", **fixed).condition(render, cams)
    assert int(none.masks[0].sum()) == 16


def test_ray_casting_is_exact_against_the_sdfs() -> None:
    """Closed-form hits lie on each primitive's surface, and a ray hits exactly when a dense march
    of the SDF along it finds the inside (up to grazing rays between march points)."""
    from sds_core.cameras import CameraSampler
    from sds_shapes.trace import HITS, NORMALS
    from sds_shapes.world import SDFS

    torch.manual_seed(0)
    origins, dirs = CameraSampler(CameraConfig(width=24, height=24)).sample(4).rays()
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    ts = torch.linspace(0.0, 3.0, 1501)
    h = torch.eye(3) * 1e-3
    for name in PRIMITIVES:
        t = HITS[name](o, d)
        hit = torch.isfinite(t)
        points = o[hit] + t[hit, None] * d[hit]
        assert hit.sum() > 100 and SDFS[name](points).abs().max() < 1e-4, name
        inside = (SDFS[name](o[:, None] + ts[None, :, None] * d[:, None]) <= 0).any(dim=1)
        assert (inside != hit).sum() <= 2, name
        grad = torch.stack([SDFS[name](points + e) - SDFS[name](points - e) for e in h], dim=-1)
        cos = (NORMALS[name](points) * grad / grad.norm(dim=-1, keepdim=True)).sum(-1)
        assert (cos > 0.999).float().mean() > 0.98, name  # all but edges (where differences blur)


def test_camera_references_are_traced_from_the_render_camera(context_factory) -> None:
    """The conditional set of a render holds the object traced from that render's own camera (A.2's
    jittered look-at, up, distance, focal and its light) at azimuth offsets within the window."""
    from sds_core.cameras import CameraSampler
    from sds_shapes.guidance import offset_cameras
    from sds_shapes.render import compose, trace_buffers

    guidance = _shapes(context_factory, "a blue torus", camera_offsets=5, window_degrees=30.0)
    torch.manual_seed(3)
    cams = CameraSampler(CameraConfig(width=32, height=32)).sample(2)
    render = Render(image=torch.zeros(2, 3, 32, 32), shading=["lambertian", "textureless"])
    cond = guidance.condition(render, cams)
    assert cond.references is not None and len(cond.references) == 2
    lam, tex = cond.references
    assert lam.denoiser.size == len(PRIMITIVES) * len(COLOURS) * 5 and tex.denoiser.size == len(PRIMITIVES) * 5
    assert set(lam.primitive[cond.masks[0]].tolist()) == {PRIMITIVES.index("torus")}
    assert set(lam.colour[cond.masks[0]].tolist()) == {list(COLOURS).index("blue")}
    assert int(cond.masks[0].sum()) == 5 and int(cond.masks[1].sum()) == 5
    # the centre offset is the render's own camera, at the guidance resolution (16 px)
    cov, lit = trace_buffers(cams.with_resolution(16, 16))
    own = compose(cov[:, :1], lit[:, :1], "lambertian", torch.tensor([COLOURS["blue"]]), torch.ones(3))
    centre = lam.denoiser.centred[cond.masks[0].nonzero()[2]] + lam.denoiser.mean
    torch.testing.assert_close(centre.view(3, 16, 16), own[PRIMITIVES.index("torus"), 0, 0] * 2 - 1)
    # offsets rotate camera and light about the vertical axis: heights, distances, focal kept
    rotated = offset_cameras(cams, torch.tensor([-30.0, 0.0, 30.0]), 16)
    pos = rotated.position.view(2, 3, 3)
    torch.testing.assert_close(pos[..., 2], cams.position[:, None, 2].expand(-1, 3))
    torch.testing.assert_close(pos.norm(dim=-1), cams.position.norm(dim=-1)[:, None].expand(-1, 3))
    torch.testing.assert_close(rotated.light_position.view(2, 3, 3)[:, 1], cams.light_position)
    torch.testing.assert_close(rotated.focal, cams.focal.repeat_interleave(3) / 2)
    # a noiseless render of the object from its own camera is denoised to itself
    x = own[PRIMITIVES.index("torus"), 0, 0][None] * 2 - 1
    both = Render(image=torch.cat([x, x]), shading=["lambertian"] * 2)
    x_c, _ = guidance.x0(torch.cat([x, x]), torch.tensor([0, 0]), guidance.condition(both, cams))
    torch.testing.assert_close(x_c[0], x[0], atol=1e-3, rtol=0)


def test_reference_views_use_the_paper_view_thresholds(context_factory) -> None:
    guidance = _shapes(context_factory)
    views = guidance.views
    assert views.views == view_labels(views.elevation, views.azimuth, CameraConfig())
    assert (views.elevation >= -10.0 - 1e-4).all() and (views.elevation <= 90.0).all()


def test_unknown_prompt_is_an_sds_error(context_factory) -> None:
    with pytest.raises(SdsError, match="cannot draw"):
        _shapes(context_factory, "a photo of a corgi")


def test_metrics_against_the_truth() -> None:
    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("skimage")
    cube, sphere = ShapeObject("cube", "red"), ShapeObject("sphere", "red")
    exact = metrics.evaluate(lambda p: -cube.sdf(p), cube, albedo=cube.rgb, resolution=32, threshold=0.0)
    assert exact["iou"] == 1.0 and exact["chamfer"] < 0.02 and exact["colour_error"] == 0.0
    wrong = metrics.evaluate(lambda p: -sphere.sdf(p), cube, albedo=COLOURS["blue"], resolution=32, threshold=0.0)
    assert wrong["iou"] < 0.8 and wrong["chamfer"] > exact["chamfer"] + 0.01 and wrong["colour_error"] > 0.3
    grid = (-cube.sdf(metrics.grid_points(32))).view(32, 32, 32)
    assert metrics.volumetric_iou(grid, cube, threshold=0.0) == 1.0
    mesh = trimesh.creation.box((0.44, 0.44, 0.44))
    assert metrics.volumetric_iou(mesh, cube, resolution=32) > 0.9
    assert metrics.shape_chamfer(mesh, cube) < 0.02
    empty = metrics.evaluate(lambda p: torch.zeros(len(p)), cube, resolution=16)
    assert empty["iou"] == 0.0 and empty["chamfer"] == float("inf")


def test_yaw_free_iou_forgives_a_turn_only_where_views_cannot_fix_the_yaw() -> None:
    cube, torus, cone = ShapeObject("cube", "red"), ShapeObject("torus", "blue"), ShapeObject("cone", "green")
    assert metrics.quarter_turn_symmetric(cube) and metrics.quarter_turn_symmetric(cone)
    assert not metrics.quarter_turn_symmetric(torus)

    def turned(obj: ShapeObject, degrees: float):
        return lambda p: -obj.sdf(metrics.turned_about_z(p, -degrees))

    plain = metrics.volumetric_iou(turned(cube, 30.0), cube, resolution=32, threshold=0.0)
    best, turn = metrics.yaw_free_iou(turned(cube, 30.0), cube, resolution=32, threshold=0.0)
    assert plain < 0.8 and best == 1.0 and abs(turn - 30.0) <= 2.0  # a 32-voxel grid cannot tell 29 from 30
    # a 45-degree turn is the worst: the two squares' overlap is a regular octagon
    assert metrics.volumetric_iou(turned(cube, 45.0), cube, resolution=48, threshold=0.0) == pytest.approx(
        0.707, abs=0.03
    )
    # the torus's yaw is fixed by its views (the front looks through the hole): no turn is forgiven
    torus_plain = metrics.volumetric_iou(turned(torus, 30.0), torus, resolution=32, threshold=0.0)
    assert torus_plain < 0.5
    assert metrics.yaw_free_iou(turned(torus, 30.0), torus, resolution=32, threshold=0.0) == (torus_plain, 0.0)
    # a round object needs no search, and a wrong shape is not rescued by one
    assert metrics.yaw_free_iou(lambda p: -cone.sdf(p), cone, resolution=32, threshold=0.0) == (1.0, 0.0)
    sphere = ShapeObject("sphere", "red")
    wrong, _ = metrics.yaw_free_iou(lambda p: -sphere.sdf(p), cube, resolution=32, threshold=0.0)
    assert wrong == pytest.approx(
        metrics.volumetric_iou(lambda p: -sphere.sdf(p), cube, resolution=32, threshold=0.0), abs=0.02
    )
    row = metrics.evaluate(turned(cube, 30.0), cube, resolution=32, threshold=0.0)
    assert row["iou"] == plain and row["iou_yaw_free"] == 1.0 and row["yaw_degrees"] == turn


def test_sds_on_an_image_converges_to_a_reference_view_of_the_red_cube(tmp_path) -> None:
    """start_run("a red cube", generator image, guidance shapes, preset draft) on CPU."""
    from sds_core.lifecycle import start_run

    started = time.perf_counter()
    trainer = start_run(
        "a red cube",
        tmp_path / "run",
        preset="draft",
        names={"generator": "image", "guidance": "shapes"},
        overrides={"run": {"preview_every": 0, "checkpoint_every": 0}},
        device="cpu",
    )
    outputs = trainer.run()
    elapsed = time.perf_counter() - started
    image = trainer.generator.image().detach()
    refs = trainer.guidance.reference_images("albedo")
    mse = (refs - image).pow(2).flatten(1).mean(1)
    psnr = float(-10 * torch.log10(mse.min()))
    assert any(p.name == "image.png" for p in outputs)
    assert psnr >= 18.0, f"PSNR {psnr:.1f} dB to the nearest reference view"
    assert elapsed < 90


def test_plugin_is_registered_with_its_draft_preset_and_imports_no_torch() -> None:
    import subprocess
    import sys

    from sds_core.plugins import load_catalog
    from sds_core.resolve import resolve_config

    catalog = load_catalog()
    assert catalog.get("guidance", "shapes").provider == "sds-shapes"
    draft = resolve_config(catalog, "draft", names={"generator": "image", "guidance": "shapes"})
    assert draft.plugin_configs["guidance"].resolution == draft.cameras.width == 32
    code = "import sys, sds_shapes.plugin, sds_shapes.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
