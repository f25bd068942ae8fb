"""The fixed cases whose gradients `tests/losses/test_bit_exact.py` pins: each loss of the family on
the tiny SD 2.1-base (epsilon), SD 2.1 (v-prediction) and IF-I-XL (pixels, learned variance)
pipelines of tests/fixtures/published.py, at fixed x, eps, t and cameras.

`tests/fixtures/gradients/record.py` ran these on the packages of commit 2d68d16, before the
noise-schedule abstraction, and stored the gradients; the test recomputes them with today's code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sds_core.protocols import BuildContext, CameraBatch, Render

#: the pipelines (tests/fixtures/configs) and the losses of the family
MODELS = ("sd21-base", "sd21-v", "if-i-xl")
LOSSES = ("sds", "csd", "nfsd", "ism", "sjc", "vsd", "vsd-lora")  # vsd: the residual eps_phi
T = torch.tensor([120, 700])  # one sample below NFSD's switch at 200, one above


def guidance_for(name: str, folder: Path) -> Any:
    """The backend of pipeline `name`, loaded from `folder` (no embedding cache: nothing on disk)."""
    context = BuildContext(device=torch.device("cpu"), prompt="a red cube", total_steps=100)
    if name == "sdxl-base":
        from sds_guidance.config import StableDiffusionXLConfig
        from sds_guidance.stable_diffusion_xl import StableDiffusionXLGuidance

        return StableDiffusionXLGuidance(StableDiffusionXLConfig(model=str(folder), embedding_cache=False), context)
    if name == "if-i-xl":
        from sds_guidance.config import DeepFloydIFConfig
        from sds_guidance.deepfloyd_if import DeepFloydIFGuidance

        return DeepFloydIFGuidance(DeepFloydIFConfig(model=str(folder), embedding_cache=False), context)
    from sds_guidance.config import StableDiffusionConfig
    from sds_guidance.stable_diffusion import StableDiffusionGuidance

    return StableDiffusionGuidance(StableDiffusionConfig(model=str(folder), embedding_cache=False), context)


def build_loss(name: str, guidance: Any, losses: Any) -> Any:
    """Loss `name` from the module namespace `losses` (today's sds_core.losses, or a frozen copy)."""
    context = BuildContext(device=torch.device("cpu"), prompt="a red cube", total_steps=100, guidance=guidance)
    classes: dict[str, tuple[Callable[..., Any], Any]] = {
        "sds": (losses.SDSLoss, losses.SDSConfig(guidance_scale=7.5)),
        "csd": (losses.CSDLoss, losses.CSDConfig()),
        "nfsd": (losses.NFSDLoss, losses.NFSDConfig()),
        "ism": (losses.ISMLoss, losses.ISMConfig()),
        "sjc": (losses.SJCLoss, losses.SJCConfig(guidance_scale=7.5)),
        "vsd": (losses.VSDLoss, losses.VSDConfig(phi="residual")),
        "vsd-lora": (losses.VSDLoss, losses.VSDConfig(phi="lora", lora_rank=2)),  # needs peft
    }
    cls, config = classes[name]
    torch.manual_seed(5)
    loss = cls(config, context)
    if name.startswith("vsd"):  # move eps_phi away from its zero start, so that it shows in g
        with torch.no_grad():
            for p in loss.phi.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))
    return loss


def cameras(batch: int) -> CameraBatch:
    from sds_core.cameras import CameraSampler
    from sds_core.config import CameraConfig

    return CameraSampler(CameraConfig()).orbit(batch, elevation=20.0)


def gradient(loss: Any, guidance: Any) -> Tensor:
    """x.grad of one `compute` at the fixed x, eps, t and cameras (VSD's eps_phi step seeded too)."""
    g = torch.Generator().manual_seed(3)
    side = guidance.latent_resolution
    x = torch.randn(2, guidance.channels, side, side, generator=g)
    noise = torch.randn(x.shape, generator=g)
    space = "latent" if guidance.space == "latent" else "rgb"
    conditioning = guidance.condition(Render(image=x, space=space, shading=["albedo"] * 2), None)
    x = x.clone().requires_grad_(True)
    torch.manual_seed(7)
    out = loss.compute(x, guidance, conditioning, T, noise, cameras(2))
    out.loss.backward()
    assert x.grad is not None
    return x.grad.detach().clone()


def all_gradients(folders: dict[str, Path], losses: Any) -> dict[str, Tensor]:
    """{"<model>/<loss>": gradient} for every model of `folders` and every loss."""
    return gradients_of({model: guidance_for(model, folder) for model, folder in folders.items()}, losses)


def gradients_of(guidances: dict[str, Any], losses: Any, names: tuple[str, ...] = LOSSES) -> dict[str, Tensor]:
    """{"<name>/<loss>": gradient} for every guidance and every loss of `names`."""
    result = {}
    for model, guidance in guidances.items():
        # all built before the first prediction: NFSD registers its negative prompt at build time
        built = {name: build_loss(name, guidance, losses) for name in names}
        for name in names:
            result[f"{model}/{name}"] = gradient(built[name], guidance)
    return result


def current_losses() -> Any:
    """Today's loss classes and configs, as the namespace `build_loss` reads."""
    from types import SimpleNamespace

    from sds_core.losses.csd import CSDLoss
    from sds_core.losses.family_config import CSDConfig, ISMConfig, NFSDConfig, SJCConfig, VSDConfig
    from sds_core.losses.ism import ISMLoss
    from sds_core.losses.nfsd import NFSDLoss
    from sds_core.losses.sds import SDSLoss
    from sds_core.losses.sds_config import SDSConfig
    from sds_core.losses.sjc import SJCLoss
    from sds_core.losses.vsd import VSDLoss

    return SimpleNamespace(
        SDSLoss=SDSLoss,
        CSDLoss=CSDLoss,
        NFSDLoss=NFSDLoss,
        ISMLoss=ISMLoss,
        SJCLoss=SJCLoss,
        VSDLoss=VSDLoss,
        SDSConfig=SDSConfig,
        CSDConfig=CSDConfig,
        NFSDConfig=NFSDConfig,
        ISMConfig=ISMConfig,
        SJCConfig=SJCConfig,
        VSDConfig=VSDConfig,
    )
