"""The contracts between the toolkit's parts: generators, guidance backends and distillation losses.

One SDS iteration (docs/design.md):

    CameraSampler -> CameraBatch -> Generator.render -> Render
      -> Guidance.prepare (resize / VAE-encode) -> DistillationLoss (uses Guidance.predict_noise)
      -> loss + Generator.regularizers -> backward -> optimiser

Conventions:
- World frame: z is up; azimuth 0 deg looks at the object from +x (the "front"), azimuth grows
  counter-clockwise seen from above. Cameras follow OpenGL: they look along their local -z.
- Images are (B, C, H, W). RGB is in [0, 1]; latents are whatever the guidance's encoder makes.

Torch is imported only for type checking here so that this module stays cheap to import.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from torch import Tensor

Space = Literal["rgb", "latent"]
ViewLabel = Literal["front", "side", "back", "overhead"]


@dataclass
class CameraBatch:
    """B pinhole cameras, their light and their view labels (DreamFusion A.2)."""

    c2w: Tensor  # (B, 4, 4) camera-to-world, OpenGL axes
    focal: Tensor  # (B,) in pixels
    width: int
    height: int
    elevation: Tensor  # (B,) degrees
    azimuth: Tensor  # (B,) degrees in [0, 360)
    distance: Tensor  # (B,)
    light_position: Tensor  # (B, 3) world position of the point light
    views: list[str] = field(default_factory=list)  # one ViewLabel per camera

    @property
    def batch_size(self) -> int:
        return int(self.c2w.shape[0])

    @property
    def position(self) -> Tensor:
        return self.c2w[:, :3, 3]

    def to(self, device: torch.device | str) -> CameraBatch:
        return replace(
            self,
            c2w=self.c2w.to(device),
            focal=self.focal.to(device),
            elevation=self.elevation.to(device),
            azimuth=self.azimuth.to(device),
            distance=self.distance.to(device),
            light_position=self.light_position.to(device),
        )

    def __getitem__(self, index: int | slice) -> CameraBatch:
        """The cameras at `index` as a batch (an int keeps the batch dimension: one camera)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return replace(
            self,
            c2w=self.c2w[index],
            focal=self.focal[index],
            elevation=self.elevation[index],
            azimuth=self.azimuth[index],
            distance=self.distance[index],
            light_position=self.light_position[index],
            views=self.views[index],
        )

    def with_resolution(self, width: int, height: int) -> CameraBatch:
        """The same cameras at another image size (focal scales with the width)."""
        scale = width / self.width
        return replace(self, width=width, height=height, focal=self.focal * scale)

    def rays(self) -> tuple[Tensor, Tensor]:
        """World-space ray origins and unit directions through pixel centres, each (B, H, W, 3)."""
        import torch

        device, dtype = self.c2w.device, self.c2w.dtype
        j, i = torch.meshgrid(
            torch.arange(self.height, device=device, dtype=dtype) + 0.5,
            torch.arange(self.width, device=device, dtype=dtype) + 0.5,
            indexing="ij",
        )
        f = self.focal.view(-1, 1, 1)
        x = (i - self.width / 2) / f
        y = -(j - self.height / 2) / f
        z = -torch.ones_like(x)
        dirs_cam = torch.stack([x, y, z], dim=-1)  # (B, H, W, 3)
        rot = self.c2w[:, :3, :3]
        dirs = torch.einsum("bij,bhwj->bhwi", rot, dirs_cam)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        origins = self.position.view(-1, 1, 1, 3).expand_as(dirs)
        return origins, dirs


@dataclass
class Render:
    """What a generator hands to the guidance, plus what its regularisers need."""

    image: Tensor  # (B, C, H, W): RGB in [0, 1], or latents when space == "latent"
    space: Space = "rgb"
    opacity: Tensor | None = None  # (B, 1, H, W) accumulated alpha, when the generator has one
    # the shading mode of each sample ("albedo", "lambertian", "textureless"; sds_core.shading):
    # real priors ignore it, the exact `shapes` prior matches references shaded the same way
    shading: list[str] = field(default_factory=list)
    # generator-specific (weights, normals, ...); aux["log"] = {name: float} goes into metrics.jsonl
    aux: dict[str, Any] = field(default_factory=dict)


@dataclass
class NoisePrediction:
    """The guidance's noise predictions for one batch, before classifier-free guidance.

    `negative` holds extra conditional predictions (K, B, ...) for Perp-Neg, with per-sample
    weights `negative_weights` (K, B); both are None for plain classifier-free guidance.
    """

    cond: Tensor
    uncond: Tensor
    negative: Tensor | None = None
    negative_weights: Tensor | None = None


@runtime_checkable
class Generator(Protocol):
    """A differentiable map from parameters to images: a NeRF, a mesh, a 2D image...

    Implementations are `torch.nn.Module`s; their parameters are optimised by the loop and their
    `state_dict` is what checkpoints hold.
    """

    #: whether the rendered view depends on the camera (False for a 2D image); when False the
    #: guidance gets no view-dependent prompts.
    view_dependent: bool

    def render(self, cameras: CameraBatch, step: int) -> Render:
        """Render one image per camera at step `step` (generators anneal and pick shading by step)."""
        ...

    def regularizers(self, render: Render, cameras: CameraBatch, step: int) -> dict[str, Tensor]:
        """Weighted regulariser terms for this render; the loop adds them to the loss."""
        ...

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups: each may carry its own absolute `lr`, or `lr_scale`, a
        multiple of `optim.lr`, and a `name` (`ScheduledLearningRates`)."""
        ...

    def preview(self, cameras: CameraBatch, step: int, shading: str | None = None) -> Tensor:
        """A (B, 3, H, W) RGB picture without gradients (latents when the space is latent).

        shading: None for the generator's usual look, or one of sds_core.shading.SHADING_MODES
        (evaluation renders "textureless" views); a generator that cannot honour it raises ValueError.
        """
        ...

    def export(self, out_dir: Any, context: ExportContext) -> list[Any]:
        """Write final artefacts (image.png, mesh.glb, ...) into out_dir; return their paths."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@runtime_checkable
class Guidance(Protocol):
    """A frozen diffusion prior: it owns its noise schedule, text conditioning and encoder.

    It predicts noise; it does not own the loss.
    """

    #: "latent" when the model works on latents (SD); "rgb" for pixel models (IF, shapes)
    space: Space
    #: the side, in pixels, of the RGB images the model expects (512 for SD, 64 for IF)
    resolution: int
    #: latent channels and side for latent models (4 and resolution // 8 for SD); 3 and resolution else
    channels: int
    latent_resolution: int
    #: optional: `background`, the solid colour of the prior's world (`DeclaresBackground`);
    #: `ground_truth`, the object a prompt names (`GroundTruth`)
    #: the classifier-free guidance scale omega this prior wants by default (DreamFusion: 100)
    default_guidance_scale: float
    #: the noise schedule: a DDPM prior gives `alphas_cumprod()`, alpha-bar_t for t = 0 ..
    #: num_train_timesteps - 1 (the VP schedule, `sds_core.schedules.VPSchedule`); any prior may
    #: instead give its own `noise_schedule()` (`OwnsSchedule`: a flow-matching prior does).
    #: A guidance-distilled prior (FLUX.1-dev) sets `distilled_guidance = True`: both branches of
    #: its prediction are the one guided prediction, and losses needing them apart refuse it
    num_train_timesteps: int

    def prepare(self, render: Render) -> Tensor:
        """The render in model space, differentiably: resized RGB in [-1, 1], or latents."""
        ...

    def decode(self, x: Tensor) -> Tensor:
        """Model-space x back to RGB in [0, 1] (identity-like for pixel models)."""
        ...

    def condition(self, render: Render, cameras: CameraBatch | None) -> Any:
        """Conditioning for the batch of `render`: view-dependent prompts when cameras are given
        (None for generators whose image does not depend on the view)."""
        ...

    def predict_noise(self, x_t: Tensor, t: Tensor, conditioning: Any) -> NoisePrediction:
        """Predictions (conditional and unconditional) for noisy x_t at integer steps t, in the
        quantity of the guidance's noise schedule: eps (DDPM), the velocity eps - x (flow)."""
        ...


@runtime_checkable
class NoiseSchedule(Protocol):
    """How a guidance noises x at integer step t (0 .. num_train_timesteps - 1, noise growing) and
    how its predictions read; every loss of the family works through it
    (`sds_core.schedules`: `VPSchedule` for DDPM, `FlowSchedule` for flow matching)."""

    kind: str  # "ddpm" or "flow"
    prediction: str  # what `predict_noise` gives: "epsilon" or "velocity"
    num_train_timesteps: int

    def add_noise(self, x: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = alpha_t x + sigma_t eps."""
        ...

    def target(self, x: Tensor, noise: Tensor) -> Tensor:
        """What an exact prediction of the clean x equals at x_t: eps, or eps - x for a flow."""
        ...

    def epsilon(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The prediction as an eps estimate."""
        ...

    def x0(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The prediction as an estimate of the clean x."""
        ...

    def step(self, x_t: Tensor, prediction: Tensor, t_from: Tensor, t_to: Tensor) -> Tensor:
        """Deterministic DDIM from t_from to t_to, up or down (Euler on a flow's ODE)."""
        ...

    def weight(self, t: Tensor, weighting: str) -> Tensor:
        """w(t) of a loss's `weighting` ("sds": the noise variance, "ism", "uniform"), per sample."""
        ...


@runtime_checkable
class OwnsSchedule(Protocol):
    """A guidance with a noise schedule of its own (a flow-matching prior), instead of DDPM's
    `alphas_cumprod()`."""

    def noise_schedule(self) -> NoiseSchedule: ...


# --- optional capabilities of a guidance, asked for by losses at build time -------------------


@runtime_checkable
class NegativePrompting(Protocol):
    """A guidance that predicts noise under a free negative text (NFSD's delta_D needs it)."""

    def negative_condition(self, conditioning: Any, text: str) -> Any:
        """Conditioning for the same batch whose conditional branch is `text`: with it,
        `predict_noise(x_t, t, ...).cond` is eps(x_t; text). Called at build time with
        conditioning None to register the text (a backend may release its text encoder later)."""
        ...


@runtime_checkable
class TrainableCopy(Protocol):
    """A guidance that can make a trainable copy of its noise predictor (VSD's eps_phi as a LoRA)."""

    def trainable_copy(self, rank: int, camera_dim: int) -> Any:
        """A `torch.nn.Module` eps_phi(x_t, t, conditioning, camera) -> eps, with only its
        low-rank adapters and camera embedding (camera: (B, camera_dim) or None) trainable."""
        ...


def require(guidance: Any, capability: type, loss: str, what: str) -> None:
    """ConfigError (one sentence) when `guidance` lacks `capability`, which loss `loss` needs for `what`."""
    from sds_core.errors import ConfigError

    if not isinstance(guidance, capability):
        name = type(guidance).__name__
        raise ConfigError(
            f"the {loss!r} loss needs {what} ({capability.__name__}), which the guidance {name} does not provide; "
            f"use another --loss or --guidance"
        )


@dataclass
class LossOutput:
    loss: Tensor
    terms: dict[str, float]
    t: float  # mean normalised timestep of this batch, for logging


@runtime_checkable
class DistillationLoss(Protocol):
    """Turns a render (in model space) and a guidance into a scalar loss. `cameras`: the batch's
    cameras (None for a view-independent generator), for losses that condition on the view (VSD)."""

    def __call__(
        self, x: Tensor, guidance: Guidance, conditioning: Any, step: int, cameras: CameraBatch | None = None
    ) -> LossOutput: ...


@runtime_checkable
class TrainableLoss(Protocol):
    """A loss with trainable state of its own (VSD's eps_phi): the loop adds its parameter groups
    to the optimiser (each with its own `lr`) and keeps its state in the checkpoint."""

    def param_groups(self) -> list[dict[str, Any]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


# --- optional capabilities, checked with isinstance -----------------------------------------


@runtime_checkable
class DeclaresBackground(Protocol):
    """A guidance whose world has a solid background colour (RGB in [0, 1], or 0..255), or None.
    3D generators with `background=auto` render it instead of the paper's MLP (the `shapes` prior)."""

    background: Any


@runtime_checkable
class GroundTruth(Protocol):
    """A guidance that knows the object a prompt names (`sds eval geometry` compares runs with it)."""

    @property
    def ground_truth(self) -> Any: ...


@runtime_checkable
class DensityField(Protocol):
    """A generator with a volume: world-space callables on (N, 3) points and the export's density level."""

    def density_field(self) -> tuple[Any, Any, float]:
        """(density_fn, albedo_fn, level)."""
        ...


@runtime_checkable
class AdaptiveParameters(Protocol):
    """A generator whose parameters change in number while it trains (Gaussian densification):
    after each optimiser step the loop calls `after_step(optimizer, step)` (step: the index of the
    step just taken), which may resize its parameters in place and the optimiser's state with
    them; its `load_state_dict` resizes its parameters to a checkpoint's before loading."""

    def after_step(self, optimizer: Any, step: int) -> None: ...


@runtime_checkable
class ScheduledLearningRates(Protocol):
    """A generator with its own learning-rate schedule for some parameter groups (the Gaussians'
    means decay exponentially, as in 3DGS): before each step the loop asks for the base rate of
    every group by its "name" and multiplies it by `optim.schedule`'s factor; None keeps the
    group's own rate."""

    def learning_rate(self, group: str, step: int) -> float | None: ...


@runtime_checkable
class SurfaceMesh(Protocol):
    """A generator with an explicit surface: a world-space trimesh mesh with vertex colours."""

    def surface_mesh(self) -> Any: ...


#: the optional guidance capabilities a run records (GuidanceFacts.capabilities), by name
GUIDANCE_CAPABILITIES: dict[str, type] = {"background": DeclaresBackground, "ground_truth": GroundTruth}


@dataclass
class GuidanceFacts:
    """What a generator reads from its guidance when it is built (sizes, space, declared
    background), recorded in each checkpoint so that a run loads for inference without its model."""

    space: Space
    resolution: int
    channels: int
    latent_resolution: int
    background: tuple[float, ...] | None = None
    capabilities: tuple[str, ...] = ()

    @classmethod
    def of(cls, guidance: Any) -> GuidanceFacts:
        background = guidance.background if isinstance(guidance, DeclaresBackground) else None
        if background is not None:
            background = tuple(float(v) for v in (background.tolist() if hasattr(background, "tolist") else background))
        return cls(
            space=guidance.space,
            resolution=int(guidance.resolution),
            channels=int(guidance.channels),
            latent_resolution=int(guidance.latent_resolution),
            background=background,
            capabilities=tuple(name for name, cap in GUIDANCE_CAPABILITIES.items() if isinstance(guidance, cap)),
        )

    @classmethod
    def from_dict(cls, data: Any, source: str = "the checkpoint") -> GuidanceFacts:
        """The facts a checkpoint recorded (`asdict` of `of`), checked: a checkpoint may come from
        someone else, so a wrong type, a missing key or a size beyond `sds_core.limits` is a
        ConfigError naming `source`, before any generator allocates from them."""
        from sds_core.errors import ConfigError
        from sds_core.limits import MAX_CHANNELS, check_image_side, shown

        where = f"the guidance facts recorded in {source}"
        if not isinstance(data, dict):
            raise ConfigError(f"{where} are not a mapping ({type(data).__name__})")
        missing = [key for key in ("space", "resolution", "channels", "latent_resolution") if key not in data]
        if missing:  # keys a later version may add are left alone
            raise ConfigError(f"{where} lack {', '.join(missing)}; sds records {_FACT_KEYS}")
        raw_space = data["space"]
        if not isinstance(raw_space, str) or raw_space not in ("rgb", "latent"):
            raise ConfigError(f"{where} give space {shown(raw_space)}; accepted: 'rgb', 'latent'")
        space: Space = "rgb" if raw_space == "rgb" else "latent"
        resolution = check_image_side(data["resolution"], f"{where}: resolution")
        latent = check_image_side(data["latent_resolution"], f"{where}: latent_resolution")
        channels = data["channels"]
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
            raise ConfigError(
                f"{where}: channels must be a whole number from 1 to {MAX_CHANNELS}, not {shown(channels)}"
            )
        background = data.get("background")
        if background is not None:
            if (
                not isinstance(background, (list, tuple))
                or not 1 <= len(background) <= 4
                or not all(_finite_number(v) for v in background)
            ):
                raise ConfigError(f"{where}: background must be None or 1 to 4 finite numbers, not {shown(background)}")
            background = tuple(float(v) for v in background)
        capabilities = data.get("capabilities", ())
        if not isinstance(capabilities, (list, tuple)) or not all(isinstance(c, str) for c in capabilities):
            raise ConfigError(f"{where}: capabilities must be a list of names, not {shown(capabilities)}")
        return cls(
            space=space,
            resolution=resolution,
            channels=channels,
            latent_resolution=latent,
            background=background,
            capabilities=tuple(capabilities),
        )


_FACT_KEYS = "space, resolution, channels, latent_resolution, background and capabilities"


def _finite_number(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class BuildContext:
    """What a plugin factory is given besides its own config."""

    device: torch.device
    prompt: str
    total_steps: int
    # the live model, for losses (VSD adapts it, NFSD encodes a negative prompt); None when a run
    # is loaded for inference. Generators read `guidance_facts()` instead, which both cases have.
    guidance: Guidance | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the whole resolved config tree
    # what a generator reads of the guidance (sizes, space, declared background): the model's when
    # training, the checkpoint's record when a run is loaded for inference
    facts: GuidanceFacts | None = None

    def guidance_facts(self) -> GuidanceFacts | None:
        """The guidance's facts: `facts`, else those of `guidance`; None when there is neither."""
        if self.facts is not None:
            return self.facts
        return None if self.guidance is None else GuidanceFacts.of(self.guidance)


@dataclass
class ExportContext:
    """What a generator needs to write its final artefacts."""

    camera_sampler: Any  # sds_core.cameras.CameraSampler
    prompt: str
    device: torch.device
    formats: tuple[str, ...] | None = None  # None: every format the generator writes
    resolution: int | None = None  # e.g. marching-cubes grid size
    threshold: float | None = None  # e.g. density level of the surface
    # model space -> RGB in [0, 1] (the guidance's decode), for generators of latents; a loaded run
    # builds its guidance on the first call only
    decode: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        # `sds export --resolution`: refused before the generator allocates its resolution^3 grid
        if self.resolution is not None:
            from sds_core.limits import check_grid_side

            check_grid_side(self.resolution, "--resolution")
