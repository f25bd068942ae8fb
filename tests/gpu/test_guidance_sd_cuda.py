"""The `stable-diffusion` guidance on CUDA in float16, on SD 2.1-base made small.

The tiny UNet / VAE / CLIP keep SD 2.1-base's architecture (tests/fixtures/published.py), are
saved to a temporary folder and loaded back by the backend offline, so the real loading code
runs, here in half precision on the GPU with the UNet channels-last, as `guidance.dtype=auto`
does on CUDA.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from sds_core.losses.sds import SDSLoss
from sds_core.losses.sds_config import SDSConfig
from sds_core.protocols import BuildContext, Render
from sds_guidance.config import StableDiffusionConfig
from sds_guidance.stable_diffusion import StableDiffusionGuidance
from tests.fixtures.published import build

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
OMEGA = 7.5
# Half precision against single precision on the same weights and inputs. Measured on a CPU with
# bfloat16 (unit roundoff 2^-8, 8x float16's 2^-11) on this tiny model: relative error 3.4e-2 of
# the SDS gradient and 3.3e-2 of the pixel gradient through the VAE, cosine > 0.999. float16
# should be about 8x closer (~5e-3); 3e-2 leaves margin for CUDA's kernels and is still far below
# what a dtype slip gives (a wrong cast, scale or timestep dtype changes the gradient wholesale).
REL_TOL = 3e-2


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("sd21-base", tmp_path_factory.mktemp("tiny-sd-cuda"))


def _context() -> BuildContext:
    return BuildContext(device=CUDA, prompt="a red cube", total_steps=100)


def _guidance(folder: Path, dtype: str) -> StableDiffusionGuidance:
    config = StableDiffusionConfig(model=str(folder), dtype=dtype, encode="mean")
    return StableDiffusionGuidance(config, _context())


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_float16_on_cuda_gives_a_finite_float32_sds_gradient(tiny_sd: Path) -> None:
    guidance = _guidance(tiny_sd, "auto")  # auto: float16 on CUDA
    assert guidance.dtype == torch.float16
    for module in (guidance.unet, guidance.vae):
        weight = next(module.parameters())
        assert weight.dtype == torch.float16 and weight.is_cuda
    assert guidance.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)

    torch.manual_seed(0)
    # a float32 render twice the model's side: resized down, then VAE-encoded in float16
    side = guidance.resolution
    pixels = torch.rand(2, 3, 2 * side, 2 * side, device=CUDA, requires_grad=True)
    render = Render(image=pixels)
    x = guidance.prepare(render)
    assert x.dtype == torch.float32 and x.is_cuda
    assert x.shape == (2, guidance.channels, guidance.latent_resolution, guidance.latent_resolution)
    conditioning = guidance.condition(render, None)
    t = torch.tensor([100, 700], device=CUDA)
    noise = torch.randn(x.shape, device=CUDA)
    loss = SDSLoss(SDSConfig(guidance_scale=OMEGA), _context())

    grad = loss.gradient(x, guidance, conditioning, t, noise)
    assert grad.dtype == torch.float32 and grad.shape == x.shape and grad.is_cuda
    assert torch.isfinite(grad).all() and grad.abs().max() > 0

    out = loss.compute(x, guidance, conditioning, t, noise)
    assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32
    out.loss.backward()
    assert pixels.grad is not None
    assert pixels.grad.dtype == torch.float32 and pixels.grad.shape == pixels.shape
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().max() > 0

    decoded = guidance.decode(x.detach())
    assert decoded.dtype == torch.float32 and decoded.shape == (2, 3, side, side)
    assert decoded.min() >= 0 and decoded.max() <= 1


def test_float16_gradients_agree_with_float32_on_the_same_model(tiny_sd: Path) -> None:
    full = _guidance(tiny_sd, "float32")
    half = _guidance(tiny_sd, "float16")
    torch.manual_seed(1)
    pixels = torch.rand(2, 3, full.resolution, full.resolution, device=CUDA)
    # the same text states for both (predict_noise casts them to the model's dtype)
    conditioning = full.condition(Render(image=pixels), None)
    t = torch.tensor([100, 700], device=CUDA)
    x = full.prepare(Render(image=pixels)).detach()
    noise = torch.randn(x.shape, device=CUDA)
    loss = SDSLoss(SDSConfig(guidance_scale=OMEGA), _context())

    # the UNet alone: w(t)(eps_hat - eps) on the same latents
    grad_full = loss.gradient(x, full, conditioning, t, noise)
    grad_half = loss.gradient(x, half, conditioning, t, noise)
    assert grad_half.dtype == torch.float32
    assert _relative(grad_half, grad_full) < REL_TOL
    assert torch.nn.functional.cosine_similarity(grad_half.flatten(), grad_full.flatten(), dim=0) > 0.999

    # the whole chain: resize, VAE encoder (forward and backward) and UNet, onto the pixels
    grads = []
    for guidance in (full, half):
        leaf = pixels.clone().requires_grad_(True)
        loss.compute(guidance.prepare(Render(image=leaf)), guidance, conditioning, t, noise).loss.backward()
        assert leaf.grad is not None and leaf.grad.dtype == torch.float32
        grads.append(leaf.grad)
    assert torch.isfinite(grads[1]).all()
    assert _relative(grads[1], grads[0]) < REL_TOL
