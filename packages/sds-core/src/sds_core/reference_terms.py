"""The reference-view terms of image-to-3D (Magic123, Qian et al. 2024, §3; DreamGaussian, Tang et
al. 2024, §4.1; threestudio's zero123 system): at the reference camera, the generator's render is
pulled to the image (RGB MSE, on the guidance's background) and its opacity to the image's mask
(MSE), with weights on a schedule, beside the prior's loss on the sampled novel views.

They go through the Generator protocol only (`render`, `Render.opacity`, `Render.shading`), so
every 3D generator gets them. The RGB term is taken only from a render shaded "albedo": a
lambertian or textureless render of the reference view is not the photograph (the mask term is
taken from every render). The zero123 guidance's recipes keep the 3D generators on albedo for the
run (threestudio's zero123 config: `ambient_only_steps: 100000`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sds_core.errors import ConfigError
from sds_core.protocols import CameraBatch, DeclaresBackground
from sds_core.reference import ImageConditioned, ReferenceImage, reference_camera, reference_options
from sds_core.reference_options import Ramp, ReferenceOptions

WHITE = (1.0, 1.0, 1.0)  # Zero-1-to-3's renders are on white (its Objaverse renders, DreamGaussian)


def ramp(value: Ramp, step: int) -> float:
    """threestudio's `C`: (start_step, start_value, end_value, end_step), linear in between."""
    start_step, start, end, end_step = value
    if end_step <= start_step:
        return float(end if step >= start_step else start)
    fraction = min(1.0, max(0.0, (step - start_step) / (end_step - start_step)))
    return float(start + (end - start) * fraction)


@dataclass
class ReferenceTerms:
    """The terms at one reference camera, for any generator with `render` (and `Render.opacity`)."""

    options: ReferenceOptions
    camera: CameraBatch
    image: ReferenceImage
    background: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.options.reference_every < 1:
            raise ConfigError(f"guidance.reference_every must be 1 or more, not {self.options.reference_every}")
        size = (self.camera.height, self.camera.width)
        # the targets at the render's size (area averaging: the image is usually larger)
        self.target_rgb = F.interpolate(self.image.on(self.background), size, mode="area")
        self.target_mask = F.interpolate(self.image.mask, size, mode="area")

    def to(self, device: torch.device) -> ReferenceTerms:
        self.camera = self.camera.to(device)
        self.target_rgb, self.target_mask = self.target_rgb.to(device), self.target_mask.to(device)
        return self

    def __call__(self, generator: Any, step: int) -> dict[str, Tensor]:
        """The weighted terms at `step` (none on the steps `reference_every` skips)."""
        if step % self.options.reference_every:
            return {}
        w_rgb, w_mask = ramp(self.options.lambda_rgb, step), ramp(self.options.lambda_mask, step)
        render = generator.render(self.camera, step)
        if render.space != "rgb" or render.image.shape[1] != 3:
            raise ConfigError("the reference-view terms need a generator that renders RGB; use nerf, mesh or gaussians")
        terms: dict[str, Tensor] = {}
        if w_rgb > 0 and (not render.shading or render.shading[0] == "albedo"):
            terms["ref_rgb"] = w_rgb * F.mse_loss(render.image, self.target_rgb)
        if w_mask > 0:
            if render.opacity is None:
                name = type(generator).__name__
                raise ConfigError(
                    f"the generator {name} renders no opacity, which the reference mask term needs; "
                    "set guidance.lambda_mask=[0,0,0,0]"
                )
            terms["ref_mask"] = w_mask * F.mse_loss(render.opacity, self.target_mask)
        return terms


def attach_reference(
    resolved: Any, guidance: Any, generator: Any, image: ReferenceImage | None, device: torch.device
) -> ReferenceTerms | None:
    """Give an image-conditioned guidance its reference image and camera, and return the terms the
    loop adds each step; None for a text-only run. One sentence when the image, the guidance and
    the generator do not go together."""
    name = resolved.specs["guidance"].name
    options = reference_options(resolved.plugin_configs["guidance"], name, image is not None)
    if options is None or image is None:
        return None
    if not generator.view_dependent:
        raise ConfigError(
            f"--image needs a 3D generator (the {resolved.specs['generator'].name!r} generator's render "
            "does not depend on the camera); use --generator nerf, mesh or gaussians"
        )
    if not isinstance(guidance, ImageConditioned):
        raise ConfigError(f"the guidance {name!r} takes no reference image (it has no set_reference)")
    declared = guidance.background if isinstance(guidance, DeclaresBackground) else None
    background = tuple(float(v) for v in declared) if declared is not None else WHITE
    terms = ReferenceTerms(options, reference_camera(options, resolved.cameras), image, background)  # type: ignore[arg-type]
    guidance.set_reference(image.on(terms.background).to(device), terms.camera.to(device))
    return terms.to(device)
