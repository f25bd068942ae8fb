"""The compiled path on CUDA (`guidance.compile`, `generator.compile` = auto): inductor's kernels for
the UNet and VAE encoder in float16 and for the NeRF field, against eager on the same weights.

Last in a `pytest -x` run (inductor compiles a UNet here; the CPU tests check the same path with
a tracing backend: tests/guidance/test_compiled.py, tests/nerf/test_compiled_field.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("sds_nerf")

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_core.errors import ConfigError
from sds_core.losses.sds import SDSLoss
from sds_core.losses.sds_config import SDSConfig
from sds_core.protocols import BuildContext, Render
from sds_guidance.config import StableDiffusionConfig
from sds_guidance.stable_diffusion import StableDiffusionGuidance
from sds_nerf.config import NerfConfig
from sds_nerf.generator import NerfGenerator
from tests.fixtures.published import build

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
# float16 both ways, the same operations fused and ordered differently: a few units of float16's
# roundoff (2^-11) through the UNet and VAE; 3e-2 as the float16-against-float32 test
# (test_guidance_sd_cuda.py), still far below a wrong input, dtype or branch
HALF_TOL = 3e-2
# float32 field (no TF32 for float32 matmuls by default): fusion changes the order of sums only,
# but finite-difference normals divide density differences by 2 eps = 1e-2, which magnifies that
# rounding in the shaded pixels' gradients: measured 5.1e-3 relative on the table's gradient with
# inductor on a CPU (the image agrees to 1e-6); a wrong input or branch differs wholesale
FIELD_TOL = 2e-2


def _context() -> BuildContext:
    return BuildContext(device=CUDA, prompt="a red cube", total_steps=100)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("sd21-base", tmp_path_factory.mktemp("tiny-sd-compiled"))


def test_compiled_guidance_matches_eager_in_float16(tiny_sd: Path) -> None:
    eager = StableDiffusionGuidance(StableDiffusionConfig(model=str(tiny_sd), compile="off", encode="mean"), _context())
    fast = StableDiffusionGuidance(StableDiffusionConfig(model=str(tiny_sd), encode="mean"), _context())
    assert fast.dtype == torch.float16 and fast._unet is not fast.unet  # auto: compiled on CUDA
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, fast.resolution, fast.resolution, device=CUDA)
    t = torch.tensor([100, 700], device=CUDA)
    noise = torch.randn(2, fast.channels, fast.latent_resolution, fast.latent_resolution, device=CUDA)
    loss = SDSLoss(SDSConfig(guidance_scale=7.5), _context())
    results = []
    for guidance in (eager, fast, fast):  # the compiled one twice: compiled, then replayed
        leaf = pixels.clone().requires_grad_(True)
        render = Render(image=leaf)
        x = guidance.prepare(render)
        grad = loss.gradient(x.detach(), guidance, guidance.condition(render, None), t, noise)
        loss.compute(x, guidance, guidance.condition(render, None), t, noise).loss.backward()
        assert x.dtype == grad.dtype == torch.float32  # the SDS gradient is float32
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
        results.append((x.detach(), grad, leaf.grad))
    for x, grad, pixel_grad in results[1:]:
        for got, want in zip((x, grad, pixel_grad), results[0], strict=True):
            assert _relative(got, want) < HALF_TOL
            assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.999


def test_compile_on_with_cpu_offload_is_refused(tiny_sd: Path) -> None:
    config = StableDiffusionConfig(model=str(tiny_sd), compile="on", cpu_offload=True)
    with pytest.raises(ConfigError, match="cpu_offload"):
        StableDiffusionGuidance(config, _context())


def test_compiled_field_renders_as_eager() -> None:
    """The hash-grid field with finite-difference normals, compiled (auto on CUDA), renders and
    differentiates as the eager one (the PyTorch sampler in eval mode: the same samples)."""
    options = {"encoding": "hashgrid", "hash_backend": "torch", "hidden": 64, "blocks": 1}
    options.update(normals="finite_difference", sampler="torch")
    torch.manual_seed(0)
    eager = NerfGenerator(NerfConfig(compile="off", **options), _context()).to(CUDA)  # type: ignore[arg-type]
    fast = NerfGenerator(NerfConfig(**options), _context()).to(CUDA)  # type: ignore[arg-type]
    assert fast.field._compiled is not None  # type: ignore[union-attr]
    fast.load_state_dict(eager.state_dict())
    cams = CameraSampler(CameraConfig(width=32, height=32)).orbit(2, elevation=15.0).to(CUDA)
    outputs = []
    for gen in (eager, fast):
        gen.eval()
        render = gen.render_views(cams, ["albedo", "lambertian"], skipping=False)
        render.image.square().sum().backward()
        table = gen.field.encoder.table  # type: ignore[union-attr]
        assert isinstance(table, torch.Tensor)
        outputs.append((render.image.detach(), table.grad))
    (image_e, grad_e), (image_f, grad_f) = outputs
    assert _relative(image_f, image_e) < FIELD_TOL
    assert grad_e is not None and grad_f is not None and _relative(grad_f, grad_e) < FIELD_TOL
