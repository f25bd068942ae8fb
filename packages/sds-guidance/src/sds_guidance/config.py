"""Options of the guidance backends (no torch: read by `sds plugins` and `sds --help`).

Defaults follow DreamFusion (Poole et al. 2023) where the paper gives a value; the section is
cited beside the constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Dtype = Literal["auto", "float32", "float16", "bfloat16"]


@dataclass
class PromptOptions:
    """Prompt processing shared by every text-conditioned backend (`sds_guidance.prompts`)."""

    # §3.2: append ", front view" / ", side view" / ", back view" / ", overhead view" from the
    # camera's label (thresholds live in the `cameras` section: overhead above 60 deg, ...)
    view_prompts: bool = True
    # how the view is appended; {prompt} and {view} are replaced
    view_template: str = "{prompt}, {view} view"
    # the text of the unconditional branch of classifier-free guidance ("" as in §3.2)
    negative_prompt: str = ""
    # Perp-Neg (Armandpour et al. 2023): the other views' prompts as negatives, their
    # components along the positive direction removed; needs view prompts and costs K=2 more
    # UNet evaluations per sample
    perp_neg: bool = False
    perp_neg_weight: float = 1.0
    # on-disk cache of text embeddings keyed by model and prompt; None: $SDS_CACHE_DIR or ~/.cache/sds
    embedding_cache: bool = True
    cache_dir: str | None = None


@dataclass
class StableDiffusionConfig(PromptOptions):
    """Any diffusers Stable Diffusion 1.x / 2.x checkpoint as the prior (latent diffusion)."""

    # hub id or local folder; DreamFusion's open ports use SD 2.1-base (threestudio's dreamfusion-sd)
    model: str = "stabilityai/stable-diffusion-2-1-base"
    variant: str | None = None  # e.g. "fp16" to load the half-precision files of a hub repo
    revision: str | None = None
    # RGB renders are resized to this side before VAE encoding; None: the model's own side, the
    # UNet's sample_size x the VAE's downscale (512 for SD 1.5 / 2.1-base, 768 for SD 2.1)
    resolution: int | None = None
    guidance_scale: float = 100.0  # §3.2: omega = 100
    dtype: Dtype = "auto"  # auto: float16 on CUDA, float32 on CPU
    encode: Literal["sample", "mean"] = "sample"  # draw from the VAE posterior, or take its mean
    attention_slicing: bool = False  # lower memory, slower
    cpu_offload: bool = False  # keep UNet and VAE on the CPU between calls (CUDA only; needs accelerate)
    channels_last: bool = True  # memory format of the UNet on CUDA


@dataclass
class DeepFloydIFConfig(PromptOptions):
    """DeepFloyd IF stage I: a 64 x 64 pixel diffusion model with a T5 text encoder."""

    model: str = "DeepFloyd/IF-I-XL-v1.0"
    variant: str | None = None  # "fp16" for the half-precision files of the hub repo
    revision: str | None = None
    # renders are resized to this side; None: the UNet's sample_size (IF-I-XL's stage I: 64 x 64)
    resolution: int | None = None
    guidance_scale: float = 100.0  # §3.2: omega = 100
    dtype: Dtype = "auto"
    max_length: int = 77  # T5 tokens, as the IF pipeline
    attention_slicing: bool = False
    cpu_offload: bool = False
    channels_last: bool = True


@dataclass
class ShapesConfig:
    """The exact offline prior over a procedural world of coloured primitives (DESIGN.md)."""

    # 64 x 64 as DreamFusion's renders (A.2); references are rendered at this side
    resolution: int = 64
    # reference cameras per object, drawn from the DreamFusion camera distribution (A.2)
    views: int = 64
    seed: int = 0  # seed of the reference cameras and lights
    supersample: int = 2  # anti-aliasing of the reference renders (samples per pixel side)
    # a solid background colour (RGB in [0, 1]); exposed as guidance.background
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # "camera" (default): the references of a render are every object traced exactly
    # (shapes/trace.py) from the render's own camera (intrinsics, distance, look-at, up, light)
    # rotated about the vertical axis by camera_offsets azimuths spanning +-window_degrees, so any
    # camera of A.2's distribution is served exactly; conditional set: the prompt's object from
    # those cameras, unconditional: every object from them. "fixed": `views` reference cameras
    # drawn once from A.2 and the view_conditioning below (also used without cameras, or when
    # the prompt names a view). Measured in benchmarks/nerf_shapes.py (sds-nerf README).
    references: Literal["camera", "fixed"] = "camera"
    camera_offsets: int = 7
    # samples per pixel side of the camera-exact references: 1 traces one ray through each pixel
    # centre, as the NeRF renders it compares with (and costs a quarter of 2)
    camera_supersample: int = 1
    # The fixed references' conditional set is the prompt's object; with cameras it is narrowed to
    # "bucket": the references in the render's view bucket (the analogue of §3.2's view prompts),
    # "window": the references within window_degrees of the render's viewing direction, or
    # "none": all of the object's references. A view suffix in the prompt always narrows to it.
    view_conditioning: Literal["none", "bucket", "window"] = "window"
    window_degrees: float = 30.0
    # omega: an exact prior needs little guidance (the paper's 100 is for Imagen, §3.2); a
    # large omega over-saturates towards what separates the object from the others (measured:
    # PSNR to the truth 19.1 dB at omega 5, 14.5 dB at omega 100). See README.
    guidance_scale: float = 5.0
    chunk_size: int = 4096  # references per matrix product
    cache: bool = True  # keep the reference renders on disk
    cache_dir: str | None = None  # None: $SDS_CACHE_DIR or ~/.cache/sds


STABLE_DIFFUSION_PRESETS: dict[str, dict[str, Any]] = {
    "draft": {"guidance": {"resolution": 256}},
}
DEEPFLOYD_IF_PRESETS: dict[str, dict[str, Any]] = {}
SHAPES_PRESETS: dict[str, dict[str, Any]] = {
    "draft": {
        "guidance": {"resolution": 32, "views": 32},
        "cameras": {"width": 32, "height": 32},
    },
}
