"""The compiled field (`generator.compile`) against the eager one: inductor's generated code, on the CPU.

One small field keeps inductor's C++ build to seconds; one graph serves every sample count
(dynamic shapes), and the annealed IPE variance is an input, not a constant, so a new step does not
compile again.
"""

from __future__ import annotations

import pytest
import torch

from sds_core.protocols import BuildContext
from sds_nerf.config import NerfConfig
from sds_nerf.field import NerfField
from sds_nerf.generator import NerfGenerator

# float32, the same operations fused: measured ~2e-7 relative on the outputs, ~1e-6 on gradients
REL_TOL = 1e-4
SMALL = {"hidden": 16, "blocks": 1, "hash_levels": 4, "hash_log2_size": 10, "hash_max_resolution": 64}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("encoding", "backend"),
    # inductor's C++ for the hash grid (the CUDA target); the IPE field (whose annealed variance
    # must not recompile) through the tracing backend, which takes seconds instead of ~40
    [("hashgrid", "inductor"), ("ipe", "aot_eager_decomp_partition")],
)
def test_compiled_field_matches_eager(encoding: str, backend: str) -> None:
    from torch._dynamo.utils import counters

    cfg = NerfConfig(encoding=encoding, compile_backend=backend, **SMALL)  # type: ignore[arg-type]
    torch.manual_seed(0)
    eager, fast = NerfField(cfg), NerfField(cfg)
    fast.load_state_dict(eager.state_dict())
    fast.compile_features()
    counters.clear()
    for step, n in ((0, 100), (300, 257), (5000, 1000)):  # other sample counts and IPE variances
        eager.set_step(step)
        fast.set_step(step)
        points = torch.rand(n, 3) * 2.4 - 1.2
        outputs = []
        for field in (eager, fast):
            field.zero_grad()
            tau, rho = field(points)
            (tau.log1p().sum() + rho.sum() + field.density(points.flip(0)).log1p().sum()).backward()
            outputs.append((tau, rho, [p.grad for p in field.parameters()]))
        (tau_e, rho_e, grads_e), (tau_f, rho_f, grads_f) = outputs
        assert _relative(tau_f, tau_e) < REL_TOL and _relative(rho_f, rho_e) < REL_TOL
        for g_f, g_e in zip(grads_f, grads_e, strict=True):
            assert g_f is not None and g_e is not None
            assert _relative(g_f, g_e) < REL_TOL
    assert counters["stats"]["unique_graphs"] == 1  # one graph, whatever the sample count and the step


def test_autograd_normals_are_taken_through_the_eager_mlp() -> None:
    """The gradient with respect to the points (§3.1's normals) is differentiated again by the loss,
    which compiled graphs do not support: those calls run eagerly, and match an eager field."""
    cfg = NerfConfig(normals="autograd", compile_backend="aot_eager_decomp_partition", **SMALL)  # type: ignore[arg-type]
    torch.manual_seed(0)
    eager, fast = NerfField(cfg), NerfField(cfg)
    fast.load_state_dict(eager.state_dict())
    fast.compile_features()
    points = torch.rand(64, 3) * 2 - 1
    grads = []
    for field in (eager, fast):
        _, _, normals = field.with_normals(points)
        normals.sum().backward()  # through the normals' own graph: a double backward
        grads.append(field.inp.weight.grad)
    assert grads[0] is not None and grads[1] is not None
    assert _relative(grads[1], grads[0]) < REL_TOL


def test_compile_auto_leaves_the_cpu_field_eager() -> None:
    context = BuildContext(device=torch.device("cpu"), prompt="a red cube", total_steps=10)
    generator = NerfGenerator(NerfConfig(**SMALL), context)  # type: ignore[arg-type]
    assert generator.cfg.compile == "auto"
    assert isinstance(generator.field, NerfField) and generator.field._compiled is None
    on = NerfGenerator(NerfConfig(compile="on", **SMALL), context)  # type: ignore[arg-type]
    assert isinstance(on.field, NerfField) and on.field._compiled is not None
