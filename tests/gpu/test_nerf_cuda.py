"""The `nerf` generator on CUDA: nerfacc's OccGridEstimator path, checked against the PyTorch sampler.

nerfacc JIT-builds its CUDA kernels on first use (minutes the first time; gpu_session.sh builds
them before pytest, into the TORCH_EXTENSIONS_DIR that tests/gpu/conftest.py keeps).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

pytest.importorskip("nerfacc")
pytest.importorskip("sds_nerf")

import nerfacc

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_core.protocols import BuildContext, CameraBatch
from sds_nerf.config import NerfConfig
from sds_nerf.generator import NerfGenerator, camera_rays

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
# The paper's field (IPE MLP, 128 x 5 blocks) with random weights, made an object with empty
# space around it: a stronger blob over a lower density floor (opacity from ~0.05 to 1 over the
# image). 128 samples per ray: a render step of 2.8 / 128.
SCENE: dict[str, Any] = {"background": "solid", "samples_per_ray": 128, "density_bias": -4.0, "blob_scale": 10.0}
# Both samplers are midpoint rules of the same volume-rendering integral on different grids: the
# PyTorch one splits each ray's chord into 128 equal bins, nerfacc steps 2.8 / 128 from the chord's
# entry (the last step may pass its exit by half a step). A CPU emulation of nerfacc's marching on
# this scene (IPE at step 0) differs from the PyTorch sampler by at most 3e-4 in opacity and 2e-4
# in colour (mean 1e-4); 5e-3 leaves room for float32 on another device while a sampling slip
# (positions off by half a step, a wrong interval length, a ray's samples lost) moves pixels by
# 1e-2 or more.
ATOL = 5e-3


def _nerf(sampler: str, **options: Any) -> NerfGenerator:
    cfg = NerfConfig(sampler=sampler, **{**SCENE, **options})  # type: ignore[arg-type]
    return NerfGenerator(cfg, BuildContext(device=CUDA, prompt="a scene", total_steps=10)).to(CUDA)


def _cameras(n: int, side: int = 32) -> CameraBatch:
    return CameraSampler(CameraConfig(width=side, height=side)).orbit(n, elevation=15.0).to(CUDA)


def test_auto_sampler_on_cuda_is_nerfaccs_occupancy_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gen = _nerf("auto")
    fallback = [str(w.message) for w in caught if "nerfacc" in str(w.message)]
    assert gen.nerfacc is not None, f"fell back to the PyTorch sampler: {fallback}"
    assert not fallback
    estimator = gen.nerfacc.estimator
    assert isinstance(estimator, nerfacc.OccGridEstimator) and estimator.binaries.is_cuda

    calls: list[int] = []
    sampling = estimator.sampling

    def spy(*args: Any, **kwargs: Any) -> Any:
        out = sampling(*args, **kwargs)
        calls.append(int(out[0].numel()))
        return out

    monkeypatch.setattr(estimator, "sampling", spy)
    gen.train()
    # step 0: the estimator's first update (every cell evaluated), then marching through it
    render = gen.render(_cameras(1), step=0)
    assert calls and calls[-1] > 0, "the render did not go through OccGridEstimator.sampling"
    assert render.image.is_cuda and torch.isfinite(render.image).all()
    assert render.samples is not None
    assert render.samples.ray_indices.is_cuda and render.samples.ray_indices.numel() == calls[-1]
    occupied = float(estimator.binaries.float().mean())
    assert 0 < occupied < 0.5, occupied  # the blob is kept, the thin floor around it skipped

    rays = camera_rays(_cameras(2))
    with torch.no_grad():
        skipping = gen.sample(rays, skipping=True)
        estimator.binaries.fill_(True)
        dense = gen.sample(rays, skipping=False)
    assert skipping.packed and dense.packed
    assert 0 < skipping.evaluated() < dense.evaluated()


def test_nerfacc_render_matches_the_pytorch_sampler_on_the_same_field() -> None:
    torch.manual_seed(0)
    fast, reference = _nerf("auto"), _nerf("torch")
    reference.load_state_dict(fast.state_dict())
    assert fast.nerfacc is not None and reference.nerfacc is None
    # both march every cell: nerfacc's estimator all occupied (it starts empty), no PyTorch grid
    fast.nerfacc.estimator.binaries.fill_(True)
    cams = _cameras(4)
    renders = []
    for gen in (fast, reference):
        gen.eval()
        gen.field.set_step(0)  # the IPE variance at its start (a smooth field)
        with torch.no_grad():
            renders.append(gen.render_views(cams, ["albedo"] * 4, skipping=False))
    got, expected = renders
    assert got.opacity is not None and expected.opacity is not None
    assert expected.opacity.max() > 0.9 and expected.opacity.min() < 0.2  # an object in empty space
    torch.testing.assert_close(got.opacity, expected.opacity, rtol=0, atol=ATOL)
    torch.testing.assert_close(got.image, expected.image, rtol=0, atol=ATOL)
    assert float((got.image - expected.image).abs().mean()) < ATOL / 5


def test_a_few_training_steps_with_the_shapes_prior_on_cuda(tmp_path: Path) -> None:
    pytest.importorskip("sds_shapes")
    from sds_core.lifecycle import start_run

    overrides = {
        "run": {"steps": 4, "seed": 0, "preview_every": 0, "checkpoint_every": 0},
        "optim": {"schedule": "constant"},  # the paper's warm-up starts at lr 1e-9
        "cameras": {"width": 32, "height": 32},
        "guidance": {"resolution": 32, "views": 16},
    }
    names = {"generator": "nerf", "guidance": "shapes"}
    trainer = start_run("a red cube", tmp_path / "run", preset="paper", overrides=overrides, names=names, device="cuda")
    gen = trainer.generator
    assert isinstance(gen, NerfGenerator) and gen.cfg.field == "mlp"
    assert gen.nerfacc is not None
    before = {name: p.detach().clone() for name, p in gen.field.named_parameters()}
    events = [trainer.train_step() for _ in range(4)]
    assert all(math.isfinite(e.loss) for e in events), [e.loss for e in events]
    assert all(e.terms["samples_per_ray"] > 0 for e in events)  # nerfacc's samples reached the field
    assert all(math.isfinite(e.terms["sds_grad_norm"]) and e.terms["sds_grad_norm"] > 0 for e in events)
    moved = [name for name, p in gen.field.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert {"inp.weight", "head.weight"} <= set(moved), sorted(set(before) - set(moved))  # first and last layer
    assert gen.nerfacc.estimator.binaries.any()


def _trained_and_loaded(cpu_checkpoint: bool) -> tuple[Tensor, Tensor]:
    """Opacities of a generator after one training render and of a fresh one loaded from its state
    (as a CPU generator saves it, without nerfacc's grid, when `cpu_checkpoint`)."""
    torch.manual_seed(0)
    trained = _nerf("auto")
    trained.train()
    trained.render(_cameras(1), step=0)  # updates the estimator
    state = trained.state_dict()
    if cpu_checkpoint:
        state["_extra_state"] = {}
    loaded = _nerf("auto")
    loaded.load_state_dict(state)
    cams = _cameras(2)
    outputs = []
    for gen in (trained, loaded):
        gen.eval()
        gen.field.set_step(0)
        outputs.append(gen.render_chunked(cams, "albedo")[1])
    return outputs[0], outputs[1]


def test_a_generator_loaded_from_a_checkpoint_renders_its_field() -> None:
    trained, loaded = _trained_and_loaded(cpu_checkpoint=False)
    assert float(trained.max()) > 0.5
    torch.testing.assert_close(loaded, trained, rtol=0, atol=ATOL)


def test_a_cpu_checkpoint_loaded_on_cuda_rebuilds_nerfaccs_grid() -> None:
    """A checkpoint without nerfacc's grid (written by a CPU run): the grid is rebuilt from the field."""
    trained, loaded = _trained_and_loaded(cpu_checkpoint=True)
    assert float(trained.max()) > 0.5
    assert float((loaded - trained).abs().mean()) < 0.02  # the grids differ only by jitter
