"""The `shapes` guidance: an exact diffusion prior over a procedural world (docs/design.md).

The data distribution is a finite set of reference renders: every object of the world (a
primitive in a colour) seen from V cameras of DreamFusion's distribution (A.2), in each shading
mode (§3.1). Its denoiser is exact (`ExactDenoiser`), on Stable Diffusion's DDPM schedule:
- conditional set: the prompt's object, in the render's shading mode, narrowed to the prompt's
  view bucket (a ", side view" suffix) or, with cameras, by `view_conditioning`;
- unconditional set: every object in the render's shading mode (the default world's; with the
  objects with a front too for a prompt naming one, `world.world_primitives`).
So classifier-free guidance behaves as with a trained model, and the ground truth is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sds_core.api import (
    SHADING_MODES,
    BuildContext,
    CameraBatch,
    CameraConfig,
    ConfigError,
    NoisePrediction,
    Render,
    SdsError,
    build_config,
    cache_root,
    per_sample_prompts,
)
from sds_shapes.config import ShapesConfig
from sds_shapes.denoiser import ExactDenoiser
from sds_shapes.render import Marks, ReferenceViews, build_references, compose, trace_layers
from sds_shapes.world import COLOURS, ShapeObject, parse_prompt, world_primitives

# Stable Diffusion's DDPM schedule: "scaled_linear" betas from 0.00085 to 0.012 over 1,000 steps
BETA_START, BETA_END, TRAIN_STEPS = 0.00085, 0.012, 1000


def sd_alphas_cumprod(steps: int = TRAIN_STEPS) -> Tensor:
    """alpha-bar_t of SD's scaled_linear schedule (betas linear in sqrt space)."""
    betas = torch.linspace(BETA_START**0.5, BETA_END**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


@dataclass
class ShapesConditioning:
    """Per sample: the shading mode and the conditional subset of that mode's references.

    With camera-exact references (`references`, one set per sample) each mask is over the
    sample's own set; otherwise over the fixed set of the sample's mode.
    """

    prompts: list[str]
    modes: list[str]
    masks: list[Tensor]  # (N,) bool each
    references: list[_ReferenceSet] | None = None


@dataclass
class _ReferenceSet:
    denoiser: ExactDenoiser
    primitive: Tensor  # (N,) index into the guidance's `primitives` (world.world_primitives)
    colour: Tensor  # (N,) index into COLOURS, -1 when colour-free (textureless)
    view: Tensor  # (N,) index into the V reference cameras


def object_references(
    coverage: Tensor,
    lit: Tensor,
    mode: str,
    background: Tensor,
    chunk_size: int,
    device: torch.device,
    marks: Marks | None = None,
) -> _ReferenceSet:
    """Every object of the world (each primitive in each colour; textureless: each primitive)
    from the V views of the buffers (P, V, H, W) (and a marked primitive's `marks`), as one exact
    denoiser's references."""
    if mode not in SHADING_MODES:
        raise ConfigError(f"unknown shading mode {mode!r}; the shapes prior has {', '.join(SHADING_MODES)}")
    albedo = None if mode == "textureless" else torch.tensor(list(COLOURS.values()))
    images = compose(coverage, lit, mode, albedo, background, marks) * 2 - 1  # (P, C, V, 3, H, W)
    p, c, v = images.shape[:3]
    grid = torch.meshgrid(torch.arange(p), torch.arange(c), torch.arange(v), indexing="ij")
    colour = grid[1] if albedo is not None else torch.full_like(grid[1], -1)
    denoiser = ExactDenoiser(images.reshape(-1, *images.shape[3:]), chunk_size).to(device)
    return _ReferenceSet(
        denoiser, grid[0].reshape(-1).to(device), colour.reshape(-1).to(device), grid[2].reshape(-1).to(device)
    )


def offset_cameras(cameras: CameraBatch, degrees: Tensor, resolution: int) -> CameraBatch:
    """Each camera, and its light, rotated about the world's z axis by each of K offsets: B * K
    cameras (sample-major) at the guidance resolution."""
    b, k = cameras.batch_size, degrees.shape[0]
    rad = torch.deg2rad(degrees.to(cameras.c2w))
    rot = torch.zeros(k, 4, 4, dtype=rad.dtype, device=rad.device)
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = rad.cos(), -rad.sin(), rad.sin(), rad.cos()
    rot[:, 2, 2] = rot[:, 3, 3] = 1.0
    c2w = (rot[None] @ cameras.c2w[:, None]).reshape(b * k, 4, 4)
    light = torch.einsum("kij,bj->bki", rot[:, :3, :3], cameras.light_position).reshape(b * k, 3)
    scaled = cameras.with_resolution(resolution, resolution)

    def per_view(x: Tensor) -> Tensor:
        return x.repeat_interleave(k)

    return CameraBatch(
        c2w=c2w,
        focal=per_view(scaled.focal),
        width=resolution,
        height=resolution,
        elevation=per_view(cameras.elevation),
        azimuth=(cameras.azimuth[:, None] + degrees.to(cameras.azimuth)).reshape(-1) % 360.0,
        distance=per_view(cameras.distance),
        light_position=light,
    )


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
        # the default world, and the objects with a front after it for a prompt naming one
        self.primitives = world_primitives(self.parsed.obj)
        if config.view_conditioning not in ("none", "bucket", "window"):
            raise ConfigError("guidance.view_conditioning must be one of 'none', 'bucket', 'window'")
        self.resolution = config.resolution
        self.latent_resolution = config.resolution
        self.default_guidance_scale = config.guidance_scale
        self.background: tuple[float, float, float] = tuple(config.background)  # type: ignore[assignment]
        self._alphas = sd_alphas_cumprod()
        self.camera_config = build_config(CameraConfig, context.config.get("cameras", {}), "cameras")
        if config.references not in ("camera", "fixed"):
            raise ConfigError("guidance.references must be 'camera' or 'fixed'")
        self._views: ReferenceViews | None = None
        self._sets: dict[str, _ReferenceSet] = {}
        # camera-exact references: K azimuth offsets spanning the window, the render's own view among them
        k = max(config.camera_offsets, 1)
        self._offsets = torch.linspace(-config.window_degrees, config.window_degrees, k) if k > 1 else torch.zeros(1)

    @property
    def views(self) -> ReferenceViews:
        """The fixed reference views (built, or read from the disk cache, on first use)."""
        if self._views is None:
            config = self.config
            cache = cache_root(config.cache_dir) if config.cache else None
            self._views = build_references(
                self.camera_config,
                config.resolution,
                config.views,
                config.seed,
                config.supersample,
                cache,
                self.primitives,
            )
        return self._views

    # --- ground truth -----------------------------------------------------------------------

    @property
    def ground_truth(self) -> ShapeObject:
        """The object the prompt names: exact SDF and colour, for `sds_shapes.metrics`."""
        return self.parsed.obj

    def reference_images(self, mode: str = "albedo", obj: ShapeObject | None = None) -> Tensor:
        """(V, 3, H, W) RGB in [0, 1]: the reference renders of `obj` (default: the prompt's)."""
        obj = obj or self.parsed.obj
        rho = torch.tensor(obj.rgb) if mode != "textureless" else None
        return self.views.image(self._primitive_index(obj), mode, rho, torch.tensor(self.background))

    def _reference_set(self, mode: str) -> _ReferenceSet:
        """Every object's fixed references in one shading mode, built on first use."""
        if mode not in self._sets:
            views, background = self.views, torch.tensor(self.background)
            self._sets[mode] = object_references(
                views.coverage, views.lit, mode, background, self.config.chunk_size, self.device, views.marks
            )
        return self._sets[mode]

    def camera_references(self, cameras: CameraBatch, modes: list[str]) -> list[_ReferenceSet]:
        """Per sample, every object traced from the sample's own camera at each azimuth offset
        of the window (intrinsics, distance, look-at, up and light as the render's): one exact
        trace of every primitive serves every colour and mode."""
        config = self.config
        cams = offset_cameras(cameras.to(self.device), self._offsets, self.resolution)
        # (P, B * K, H, W) each
        coverage, lit, marks = trace_layers(cams, config.camera_supersample, primitives=self.primitives)
        k = self._offsets.shape[0]
        background = torch.tensor(self.background)
        return [
            object_references(
                coverage[:, i * k : (i + 1) * k],
                lit[:, i * k : (i + 1) * k],
                mode,
                background,
                config.chunk_size,
                self.device,
                None if marks is None else (marks[0][:, i * k : (i + 1) * k], marks[1][:, i * k : (i + 1) * k]),
            )
            for i, mode in enumerate(modes)
        ]

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
            mask = torch.tensor([label == view for label in self.views.views], device=self.device)
            return mask if bool(mask.any()) else torch.ones(v, dtype=torch.bool, device=self.device)
        if direction is not None:
            cos = self.views.directions.to(self.device) @ (direction / direction.norm().clamp_min(1e-8))
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
        if self.config.references == "camera" and cameras is not None and self.parsed.view is None:
            obj = self.parsed.obj
            refs = self.camera_references(cameras, modes)
            masks = [self._object_mask(ref, mode, obj) for ref, mode in zip(refs, modes, strict=True)]
            return ShapesConditioning(prompts, modes, masks, refs)
        masks = []
        for i, (text, mode) in enumerate(zip(prompts, modes, strict=True)):
            parsed = parse_prompt(text)
            ref = self._reference_set(mode)
            obj = parsed.obj
            mask = self._object_mask(ref, mode, obj)
            direction = None
            if parsed.view is None and cameras is not None and mode_of == "window":
                direction = cameras.position[i].to(self.device, torch.float32)
            mask = mask & self._view_mask(parsed.view, direction)[ref.view]
            masks.append(mask)
        return ShapesConditioning(prompts, modes, masks)

    def _primitive_index(self, obj: ShapeObject) -> int:
        """The index of `obj`'s primitive in this prior's world; an SdsError when it is not there."""
        if obj.primitive not in self.primitives:
            raise SdsError(
                f"{obj.prompt!r} is an object with a front, outside the world of {self.prompt!r}; "
                "the prior serves it only to a prompt that names one"
            )
        return self.primitives.index(obj.primitive)

    def _object_mask(self, ref: _ReferenceSet, mode: str, obj: ShapeObject) -> Tensor:
        """The references of `obj` (any colour when textureless)."""
        mask = ref.primitive == self._primitive_index(obj)
        if mode != "textureless":
            mask = mask & (ref.colour == list(COLOURS).index(obj.colour))
        return mask

    def negative_condition(self, conditioning: ShapesConditioning | None, text: str) -> ShapesConditioning | None:
        """`conditioning` with its conditional set replaced by the images of `text` (NegativePrompting).

        A text naming an object of the world ("a blue cone") selects that object's references;
        any other text (NFSD's "unrealistic, blurry, ...") has no images in this world and stands
        for "not the prompt's object": every other object, in each sample's shading mode. With
        camera-exact references, from each sample's own cameras.
        """
        if conditioning is None:
            return None
        try:
            named: ShapeObject | None = parse_prompt(text).obj
        except SdsError:
            named = None
        refs = conditioning.references
        masks = []
        for i, (prompt, mode) in enumerate(zip(conditioning.prompts, conditioning.modes, strict=True)):
            ref = refs[i] if refs is not None else self._reference_set(mode)
            mask = self._object_mask(ref, mode, named or parse_prompt(prompt).obj)
            masks.append(mask if named is not None else ~mask)
        return ShapesConditioning([text] * len(masks), list(conditioning.modes), masks, refs)

    def predict_noise(self, x_t: Tensor, t: Tensor, conditioning: Any) -> NoisePrediction:
        cond: ShapesConditioning = conditioning
        alpha_bar = self._alphas.to(x_t.device)[t]
        eps_c = torch.empty_like(x_t)
        eps_u = torch.empty_like(x_t)
        # camera-exact references: one set per sample; fixed ones: one set per shading mode
        groups = (
            [([i], cond.references[i]) for i in range(len(cond.modes))]
            if cond.references is not None
            else [([i for i, m in enumerate(cond.modes) if m == mode], None) for mode in dict.fromkeys(cond.modes)]
        )
        for idx, own in groups:
            ref = own if own is not None else self._reference_set(cond.modes[idx[0]])
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
