"""The `mesh` generator's soft rasteriser on CUDA gives what it gives on the CPU.

Same mesh (a bumpy, many-coloured icosphere), same cameras, one generator per device with the same
state. Tolerance: rendered in float32 on the CPU, this scene differs from a float64 render by at
most 1.2e-5 (image) and 8e-6 (opacity), and its gradients by 2.3e-5 of their largest entry;
CUDA's float32 (other summation orders, fused multiply-adds) is as far from float64, so the two
devices stay within about twice that. 1e-4 (images) and 2e-4 of the largest entry (gradients)
leave a 4x margin.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytest.importorskip("trimesh")
pytest.importorskip("sds_mesh")

from sds_core.cameras import CameraSampler
from sds_core.config import CameraConfig
from sds_core.protocols import BuildContext, CameraBatch
from sds_mesh.config import MeshConfig
from sds_mesh.generator import MeshGenerator
from sds_mesh.rasterizer import SoftRasterizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
MODES = ("albedo", "lambertian", "textureless")


def _context(device: torch.device) -> BuildContext:
    return BuildContext(device=device, prompt="a mesh", total_steps=10)


def _generators() -> tuple[MeshGenerator, MeshGenerator]:
    """The same mesh on the CPU and on CUDA, both with the PyTorch soft rasteriser."""
    cfg = MeshConfig(rasterizer="soft", subdivisions=3, background="solid")
    torch.manual_seed(0)
    cpu = MeshGenerator(cfg, _context(CPU))
    with torch.no_grad():
        cpu.offsets.normal_(0.0, 0.05)
        cpu.color_logits.normal_()
    gpu = MeshGenerator(cfg, _context(CUDA)).to(CUDA)
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu


def _close(got: torch.Tensor, expected: torch.Tensor, atol: float, what: str) -> None:
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=atol, msg=lambda m: f"{what}: {m}")


def _cameras() -> CameraBatch:
    return CameraSampler(CameraConfig(width=48, height=48)).orbit(3, elevation=20.0)


def test_auto_rasteriser_on_cuda_without_nvdiffrast_is_the_soft_one() -> None:
    if importlib.util.find_spec("nvdiffrast") is not None:
        pytest.skip("nvdiffrast is installed: generator.rasterizer=auto uses it on CUDA")
    gen = MeshGenerator(MeshConfig(subdivisions=1), _context(CUDA))
    assert isinstance(gen.rasterizer, SoftRasterizer)


def test_soft_rasteriser_renders_on_cuda_as_on_the_cpu() -> None:
    cpu, gpu = _generators()
    assert isinstance(gpu.rasterizer, SoftRasterizer)
    cams = _cameras()
    for mode in MODES:
        with torch.no_grad():
            expected = cpu.render_views(cams, [mode] * 3)
            got = gpu.render_views(cams.to(CUDA), [mode] * 3)
        assert got.image.is_cuda and got.opacity is not None and expected.opacity is not None
        # the mesh is in view and so is the background around it
        assert (expected.opacity > 0.999).any() and (expected.opacity < 1e-3).any()
        _close(got.image, expected.image, 1e-4, f"{mode} image")
        _close(got.opacity, expected.opacity, 1e-4, f"{mode} opacity")


def test_soft_rasteriser_gradients_on_cuda_match_the_cpu() -> None:
    cpu, gpu = _generators()
    cams = _cameras()
    for gen, where in ((cpu, cams), (gpu, cams.to(CUDA))):
        gen.render_views(where, ["lambertian"] * 3).image.sum().backward()
    for name in ("offsets", "color_logits"):
        expected = getattr(cpu, name).grad
        got = getattr(gpu, name).grad
        assert expected is not None and got is not None and got.is_cuda
        scale = float(expected.abs().max())
        assert scale > 0
        _close(got, expected, 2e-4 * scale, f"gradient of {name}")
