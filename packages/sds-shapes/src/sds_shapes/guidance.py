"""The `shapes` guidance: an exact diffusion prior over a procedural world (docs/design.md).

The data distribution is a finite set of reference renders: every object of the world (a
primitive in a colour) seen from V cameras of DreamFusion's distribution (A.2), in each shading
mode (§3.1). Its denoiser is exact (`ExactDenoiser`), on Stable Diffusion's DDPM schedule:
- conditional set: the prompt's object, in the render's shading mode, narrowed to the prompt's
  view bucket (a ", side view" suffix) or, with cameras, by `view_conditioning`;
- unconditional set: every object in the render's shading mode.
So classifier-free guidance behaves as with a trained model, and the ground truth is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sds_core.config import CameraConfig, build_config
from sds_core.errors import ConfigError, SdsError
from sds_core.prompts import cache_root, per_sample_prompts
from sds_core.protocols import BuildContext, CameraBatch, NoisePrediction, Render
from sds_core.shading import SHADING_MODES
from sds_shapes.config import ShapesConfig
from sds_shapes.denoiser import ExactDenoiser
from sds_shapes.render import ReferenceViews, build_references
from sds_shapes.world import COLOURS, PRIMITIVES, ShapeObject, parse_prompt

# Stable Diffusion's DDPM schedule: "scaled_linear" betas from 0.00085 to 0.012 over 1,000 steps
BETA_START, BETA_END, TRAIN_STEPS = 0.00085, 0.012, 1000


def sd_alphas_cumprod(steps: int = TRAIN_STEPS) -> Tensor:
    """alpha-bar_t of SD's scaled_linear schedule (betas linear in sqrt space)."""
    betas = torch.linspace(BETA_START**0.5, BETA_END**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


@dataclass
class ShapesConditioning:
    """Per sample: the shading mode and the conditional subset of that mode's references."""

    prompts: list[str]
    modes: list[str]
    masks: list[Tensor]  # (N_mode,) bool each


@dataclass
class _ReferenceSet:
    denoiser: ExactDenoiser
    primitive: Tensor  # (N,) index into PRIMITIVES
    colour: Tensor  # (N,) index into COLOURS, -1 when colour-free (textureless)
    view: Tensor  # (N,) index into the V reference cameras


class ShapesGuidance:
    """The exact offline prior; exposes its ground truth and the background of its world."""

    space = "rgb"
    channels = 3
    num_train_timesteps = TRAIN_STEPS

    def __init__(self, config: ShapesConfig, context: BuildContext) -> None:
        self.config = config
        self.device = torch.device(context.device)
        self.prompt = context.prompt
        self.parsed = parse_prompt(context.prompt)
        if config.view_conditioning not in ("none", "bucket", "window"):
            raise ConfigError("guidance.view_conditioning must be one of 'none', 'bucket', 'window'")
        self.resolution = config.resolution
        self.latent_resolution = config.resolution
        self.default_guidance_scale = config.guidance_scale
        self.background: tuple[float, float, float] = tuple(config.background)  # type: ignore[assignment]
        self._alphas = sd_alphas_cumprod()
        self.camera_config = build_config(CameraConfig, context.config.get("cameras", {}), "cameras")
        cache = cache_root(config.cache_dir) if config.cache else None
        self.views: ReferenceViews = build_references(
            self.camera_config, config.resolution, config.views, config.seed, config.supersample, cache
        )
        self._directions = self.views.directions.to(self.device)
        self._labels = list(self.views.views)
        self._sets: dict[str, _ReferenceSet] = {}

    # --- ground truth -----------------------------------------------------------------------

    @property
    def ground_truth(self) -> ShapeObject:
        """The object the prompt names: exact SDF and colour, for `sds_shapes.metrics`."""
        return self.parsed.obj

    def reference_images(self, mode: str = "albedo", obj: ShapeObject | None = None) -> Tensor:
        """(V, 3, H, W) RGB in [0, 1]: the reference renders of `obj` (default: the prompt's)."""
        obj = obj or self.parsed.obj
        rho = torch.tensor(obj.rgb) if mode != "textureless" else None
        return self.views.image(PRIMITIVES.index(obj.primitive), mode, rho, torch.tensor(self.background))

    def _reference_set(self, mode: str) -> _ReferenceSet:
        """Every object's references in one shading mode, built on first use."""
        if mode not in SHADING_MODES:
            raise ConfigError(f"unknown shading mode {mode!r}; the shapes prior has {', '.join(SHADING_MODES)}")
        if mode in self._sets:
            return self._sets[mode]
        colours = [None] if mode == "textureless" else list(COLOURS.values())
        images, prim, col = [], [], []
        for p in range(len(PRIMITIVES)):
            for c, rgb in enumerate(colours):
                rho = None if rgb is None else torch.tensor(rgb)
                images.append(self.views.image(p, mode, rho, torch.tensor(self.background)) * 2 - 1)
                prim.append(torch.full((self.config.views,), p))
                col.append(torch.full((self.config.views,), c if rgb is not None else -1))
        view = torch.arange(self.config.views).repeat(len(images))
        denoiser = ExactDenoiser(torch.cat(images), self.config.chunk_size).to(self.device)
        ref = _ReferenceSet(
            denoiser, torch.cat(prim).to(self.device), torch.cat(col).to(self.device), view.to(self.device)
        )
        self._sets[mode] = ref
        return ref

    # --- the Guidance protocol --------------------------------------------------------------

    def alphas_cumprod(self) -> Tensor:
        return self._alphas

    def prepare(self, render: Render) -> Tensor:
        """RGB in [0, 1] to [-1, 1] at the guidance resolution (antialiased resize), differentiably."""
        if render.space != "rgb":
            raise ConfigError("the shapes prior works on RGB renders; use generator.space=rgb")
        image = render.image
        if image.shape[-2:] != (self.resolution, self.resolution):
            size = (self.resolution, self.resolution)
            image = F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)
        return image * 2 - 1

    def decode(self, x: Tensor) -> Tensor:
        return ((x + 1) / 2).clamp(0, 1)

    def _view_mask(self, view: str | None, direction: Tensor | None) -> Tensor:
        """(V,) bool over the reference cameras for one sample."""
        v = self.config.views
        if view is not None:
            mask = torch.tensor([label == view for label in self._labels], device=self.device)
            return mask if bool(mask.any()) else torch.ones(v, dtype=torch.bool, device=self.device)
        if direction is not None:
            cos = self._directions @ (direction / direction.norm().clamp_min(1e-8))
            mask = cos >= math.cos(math.radians(self.config.window_degrees))
            if not bool(mask.any()):
                mask = cos == cos.max()  # the nearest reference camera
            return mask
        return torch.ones(v, dtype=torch.bool, device=self.device)

    def condition(self, render: Render, cameras: CameraBatch | None) -> ShapesConditioning:
        batch = render.image.shape[0]
        modes = list(render.shading) or ["albedo"] * batch
        if len(modes) != batch:
            raise ValueError(f"{len(modes)} shading modes for a batch of {batch}")
        mode_of = self.config.view_conditioning
        views = cameras.views if cameras is not None and mode_of == "bucket" else None
        # the shared prompt processing appends the camera's view (§3.2); a prompt's own suffix wins
        prompts = per_sample_prompts(self.prompt, views, batch)
        masks = []
        for i, (text, mode) in enumerate(zip(prompts, modes, strict=True)):
            parsed = parse_prompt(text)
            ref = self._reference_set(mode)
            obj = parsed.obj
            mask = ref.primitive == PRIMITIVES.index(obj.primitive)
            if mode != "textureless":
                mask = mask & (ref.colour == list(COLOURS).index(obj.colour))
            direction = None
            if parsed.view is None and cameras is not None and mode_of == "window":
                direction = cameras.position[i].to(self.device, torch.float32)
            mask = mask & self._view_mask(parsed.view, direction)[ref.view]
            masks.append(mask)
        return ShapesConditioning(prompts, modes, masks)

    def negative_condition(self, conditioning: ShapesConditioning | None, text: str) -> ShapesConditioning | None:
        """`conditioning` with its conditional set replaced by the images of `text` (NegativePrompting).

        A text naming an object of the world ("a blue cone") selects that object's references;
        any other text (NFSD's "unrealistic, blurry, ...") has no images in this world and stands
        for "not the prompt's object": every other object, in each sample's shading mode.
        """
        if conditioning is None:
            return None
        try:
            named: ShapeObject | None = parse_prompt(text).obj
        except SdsError:
            named = None
        masks = []
        for prompt, mode in zip(conditioning.prompts, conditioning.modes, strict=True):
            ref = self._reference_set(mode)
            obj = named or parse_prompt(prompt).obj
            mask = ref.primitive == PRIMITIVES.index(obj.primitive)
            if mode != "textureless":
                mask = mask & (ref.colour == list(COLOURS).index(obj.colour))
            masks.append(mask if named is not None else ~mask)
        return ShapesConditioning([text] * len(masks), list(conditioning.modes), masks)

    def predict_noise(self, x_t: Tensor, t: Tensor, conditioning: Any) -> NoisePrediction:
        cond: ShapesConditioning = conditioning
        alpha_bar = self._alphas.to(x_t.device)[t]
        eps_c = torch.empty_like(x_t)
        eps_u = torch.empty_like(x_t)
        for mode in dict.fromkeys(cond.modes):
            idx = [i for i, m in enumerate(cond.modes) if m == mode]
            ref = self._reference_set(mode)
            z = x_t[idx].to(self.device)
            a = alpha_bar[idx].to(self.device)
            masks = torch.stack([cond.masks[i] for i in idx])
            x0_c, x0_u = ref.denoiser.x0(z, a, [masks, None])
            eps_c[idx] = ref.denoiser.epsilon(z, a, x0_c).to(x_t.device)
            eps_u[idx] = ref.denoiser.epsilon(z, a, x0_u).to(x_t.device)
        return NoisePrediction(cond=eps_c, uncond=eps_u)

    def x0(self, x_t: Tensor, t: Tensor, conditioning: ShapesConditioning) -> tuple[Tensor, Tensor]:
        """(conditional, unconditional) x0_hat for x_t: what the prior believes the clean image is."""
        prediction = self.predict_noise(x_t, t, conditioning)
        a = self._alphas.to(x_t.device)[t].view(-1, 1, 1, 1)
        return (
            (x_t - (1 - a).sqrt() * prediction.cond) / a.sqrt(),
            (x_t - (1 - a).sqrt() * prediction.uncond) / a.sqrt(),
        )
