"""gsplat's CUDA rasteriser against the PyTorch rasteriser of sds-gaussians: images and gradients.

Same random Gaussians, same cameras: the PyTorch rasteriser follows gsplat 1.5.3's definitions
(EWA projection, alpha threshold 1/255, alpha clamp 0.999, transmittance cut-off 1e-4), so the
two images differ only by float32 rounding (gsplat composites in a different order of
operations; the PyTorch one accumulates transmittance in float64). Tolerances: 1e-4 on images
and opacities, gradients within 1e-3 of their largest entry. Not yet run on a GPU: the first GPU
session reports the measured differences (printed with -s).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytest.importorskip("sds_gaussians")

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_core.protocols import BuildContext
from sds_gaussians.config import GaussianConfig
from sds_gaussians.generator import GaussianGenerator, gsplat_available
from sds_gaussians.rasterizer import Splats, TorchRasterizer

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(
        importlib.util.find_spec("gsplat") is None or not gsplat_available(), reason="needs gsplat and packaging"
    ),
]

CUDA = torch.device("cuda")
NAMES = ("means", "quats", "scales", "opacities", "colors")


def _scene(n: int = 300, cameras: int = 3, side: int = 48) -> tuple[dict[str, torch.Tensor], object]:
    gen = torch.Generator().manual_seed(0)
    leaves = {
        "means": (torch.rand(n, 3, generator=gen) - 0.5) * 0.6,
        "quats": torch.randn(n, 4, generator=gen),
        "scales": 0.01 + 0.05 * torch.rand(n, 3, generator=gen),
        "opacities": 0.1 + 0.85 * torch.rand(n, generator=gen),
        "colors": torch.rand(cameras, n, 3, generator=gen),
    }
    cams = CameraSampler(CameraConfig(width=side, height=side)).orbit(cameras, elevation=20.0, distance=1.4)
    return {k: v.to(CUDA).requires_grad_(True) for k, v in leaves.items()}, cams.to(CUDA)


def _render_and_grads(rasterizer, leaves, cams) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    for leaf in leaves.values():
        leaf.grad = None
    out = rasterizer(Splats(**leaves), cams)
    weights = torch.linspace(0.5, 1.5, out.color.numel(), device=CUDA).view_as(out.color)
    ((out.color * weights).sum() + out.alpha.sum()).backward()
    return out.color.detach(), out.alpha.detach(), {k: v.grad.detach().clone() for k, v in leaves.items()}


def test_gsplat_and_the_pytorch_rasteriser_agree() -> None:
    from sds_gaussians.gsplat_backend import GsplatRasterizer

    leaves, cams = _scene()
    color_t, alpha_t, grads_t = _render_and_grads(TorchRasterizer(), leaves, cams)
    color_g, alpha_g, grads_g = _render_and_grads(GsplatRasterizer(), leaves, cams)
    print(f"image max diff {float((color_t - color_g).abs().max()):.2e}, "
          f"opacity {float((alpha_t - alpha_g).abs().max()):.2e}")  # fmt: skip
    assert float(alpha_t.max()) > 0.5
    assert torch.allclose(color_t, color_g, atol=1e-4)
    assert torch.allclose(alpha_t, alpha_g, atol=1e-4)
    for name in NAMES:
        scale = float(grads_t[name].abs().max())
        diff = float((grads_t[name] - grads_g[name]).abs().max())
        print(f"{name}: gradient max diff {diff:.2e} of {scale:.2e}")
        assert diff <= 1e-3 * scale, name


def test_the_generator_picks_gsplat_on_cuda() -> None:
    config = GaussianConfig(num_points=100, background="solid")
    generator = GaussianGenerator(config, BuildContext(device=CUDA, prompt="x", total_steps=1)).to(CUDA)
    assert generator.rasterizer.name == "gsplat"
    cams = CameraSampler(CameraConfig(width=32, height=32, batch_size=2)).sample().to(CUDA)
    render = generator.render(cams, step=0)
    render.image.sum().backward()
    assert generator.gaussians.means.grad is not None and render.image.shape == (2, 3, 32, 32)
