"""The compiled path of the diffusers backends (`guidance.compile`) against the eager one, on the CPU.

The tiny published architectures (tests/fixtures) go through torch.compile with the
`aot_eager_decomp_partition` backend: TorchDynamo captures the UNet and the VAE encoder, and
AOTAutograd builds their forward and backward graphs with inductor's decompositions and
partitioner, which is everything the backends decide (what is compiled, at which shapes, which
dtype goes in and out, how the posterior is drawn). Inductor's C++ code generation for a UNet takes
minutes on a 2-core CPU: it is checked on the field here (tests/nerf/test_compiled_field.py) and
on the UNet and VAE on CUDA (tests/gpu/test_compiled_cuda.py).
"""

from __future__ import annotations

import pytest

pytest.importorskip("diffusers")

import torch

from sds_core.errors import ConfigError
from sds_core.losses.sds import SDSLoss
from sds_core.losses.sds_config import SDSConfig
from sds_core.protocols import Render
from sds_guidance._diffusers import compile_wanted
from sds_guidance.config import StableDiffusionConfig
from sds_guidance.stable_diffusion import StableDiffusionGuidance

# float32 through the same operations in another order (AOTAutograd's decompositions): measured
# ~1e-6 relative on these models; a wrong input, dtype or branch differs wholesale
REL_TOL = 1e-4
BACKEND = "aot_eager_decomp_partition"


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _frames_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["frames"]["ok"])


def _pixel_gradient(guidance, pixels, t, noise, context) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents of the render and the SDS gradient on its pixels (through the VAE for SD)."""
    torch.manual_seed(3)  # the posterior's draw
    leaf = pixels.clone().requires_grad_(True)
    render = Render(image=leaf)
    x = guidance.prepare(render)
    loss = SDSLoss(SDSConfig(guidance_scale=7.5), context)
    loss.compute(x, guidance, guidance.condition(render, None), t, noise).loss.backward()
    assert leaf.grad is not None
    return x.detach(), leaf.grad


def test_compiled_stable_diffusion_matches_eager(tiny_models, context_factory) -> None:
    """Latents and SDS pixel gradients agree; the latents are drawn from the posterior (encode="sample")
    eagerly, from the process's random state, so a compiled guidance draws the same ones. (IF
    compiles its UNet through the same `compile_for`; its tiny model adds 15 s here, so it is left out.)"""
    folder = tiny_models("sd-epsilon")
    context = context_factory("a red cube")
    eager = StableDiffusionGuidance(StableDiffusionConfig(model=str(folder), compile="off"), context)
    assert eager._unet is eager.unet  # off: the module itself
    config = StableDiffusionConfig(model=str(folder), compile="on", compile_backend=BACKEND)
    fast = StableDiffusionGuidance(config, context)
    torch.manual_seed(0)
    side = eager.resolution
    pixels = torch.rand(2, 3, 2 * side, 2 * side)  # resized, then (SD) VAE-encoded
    t = torch.tensor([100, 700])
    channels, latent_side = eager.channels, eager.latent_resolution
    noise = torch.randn(2, channels, latent_side, latent_side)

    before = _frames_compiled()
    x_fast, grad_fast = _pixel_gradient(fast, pixels, t, noise, context)
    assert _frames_compiled() > before  # the compiled functions ran
    x_eager, grad_eager = _pixel_gradient(eager, pixels, t, noise, context)
    assert x_fast.dtype == grad_fast.dtype == torch.float32
    assert _relative(x_fast, x_eager) < REL_TOL
    assert _relative(grad_fast, grad_eager) < REL_TOL
    assert grad_eager.abs().max() > 0


def test_compile_auto_leaves_the_cpu_eager(tiny_models, context_factory) -> None:
    config = StableDiffusionConfig(model=str(tiny_models("sd-epsilon")))
    guidance = StableDiffusionGuidance(config, context_factory("a red cube"))
    assert guidance.config.compile == "auto"
    assert guidance._unet is guidance.unet


def test_when_the_backends_compile() -> None:
    """auto: CUDA only, and never an offloaded model; on with cpu_offload on CUDA is one sentence."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device name: no GPU is needed
    assert compile_wanted(StableDiffusionConfig(), cuda)
    assert not compile_wanted(StableDiffusionConfig(), cpu)
    assert compile_wanted(StableDiffusionConfig(compile="on"), cpu)
    assert not compile_wanted(StableDiffusionConfig(compile="off"), cuda)
    assert not compile_wanted(StableDiffusionConfig(cpu_offload=True), cuda)
    assert compile_wanted(StableDiffusionConfig(compile="on", cpu_offload=True), cpu)  # offload is CUDA's
    with pytest.raises(ConfigError, match="cannot be combined with"):
        compile_wanted(StableDiffusionConfig(compile="on", cpu_offload=True), cuda)
