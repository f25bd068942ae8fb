"""Options of the guidance backends (no torch: read by `sds plugins` and `sds --help`).

Defaults follow DreamFusion (Poole et al. 2023) where the paper gives a value; the section is
cited beside the constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sds_core.api import ReferenceOptions

Dtype = Literal["auto", "float32", "float16", "bfloat16"]


@dataclass
class PromptOptions:
    """Prompt processing shared by every text-conditioned backend (`sds_guidance.prompt_embeddings`)."""

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
class CompileOptions:
    """torch.compile of the UNet (and Stable Diffusion's VAE encoder) at the run's fixed shapes
    (`sds_core.compiling`); predictions and the SDS gradient stay float32 whatever the dtype."""

    # "auto": on CUDA (a step there is launch overhead and small kernels), off on the CPU and with
    # cpu_offload; "on" compiles on the CPU too (inductor builds C++: minutes for a UNet)
    compile: Literal["auto", "on", "off"] = "auto"
    # inductor's mode: "reduce-overhead" adds CUDA graphs (fewer launches, more memory)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    # "inductor" generates fused kernels; "aot_eager_decomp_partition" traces, decomposes and
    # partitions as inductor does but runs the graphs eagerly (a quick check of the compiled path)
    compile_backend: Literal["inductor", "aot_eager_decomp_partition"] = "inductor"


@dataclass
class BackgroundDeclaration:
    """What the model's training images showed behind their objects, when that is known."""

    # the solid RGB (in [0, 1]) behind every object the model was trained on, or None (unknown, as
    # for the published models); 3D generators with `background = auto` then render on it instead
    # of the paper's MLP (A.2), as they do for the `shapes` prior. A model trained on one backdrop
    # never saw another: with the MLP, SDS paints the prompt's colour over the whole frame.
    background: tuple[float, float, float] | None = None


@dataclass
class StableDiffusionConfig(BackgroundDeclaration, CompileOptions, PromptOptions):
    """Any diffusers Stable Diffusion 1.x / 2.x checkpoint as the prior (latent diffusion)."""

    # hub id or local folder; DreamFusion's open ports use SD 2.1-base (threestudio's dreamfusion-sd)
    model: str = "stabilityai/stable-diffusion-2-1-base"
    variant: str | None = None  # e.g. "fp16" to load the half-precision files of a hub repo
    revision: str | None = None
    # load `.bin` (pickled) weights when a folder has no safetensors; off: such a folder is refused,
    # since unpickling can run code (allowed, they are unpickled with weights_only=True)
    allow_pickled_weights: bool = False
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
class StableDiffusionXLConfig(StableDiffusionConfig):
    """Any diffusers Stable Diffusion XL checkpoint (Podell et al. 2023): two CLIP text encoders,
    pooled text and size/crop ids as added conditioning. The other options are Stable Diffusion's."""

    model: str = "stabilityai/stable-diffusion-xl-base-1.0"  # hub id or local folder
    # None: the model's own side, the UNet's sample_size x the VAE's downscale (1024 for SDXL base,
    # the side it was fine-tuned at, §2.5); the time ids tell the UNet this side
    resolution: int | None = None
    guidance_scale: float = 100.0  # DreamFusion §3.2: omega = 100 (as for Stable Diffusion)
    # the unconditional branch of the empty negative prompt as zeros (StableDiffusionXLPipeline's
    # `force_zeros_for_empty_prompt`); None: the model's model_index.json (true for SDXL base)
    force_zeros_for_empty_prompt: bool | None = None


@dataclass
class DeepFloydIFConfig(BackgroundDeclaration, CompileOptions, PromptOptions):
    """DeepFloyd IF stage I: a 64 x 64 pixel diffusion model with a T5 text encoder."""

    model: str = "DeepFloyd/IF-I-XL-v1.0"  # hub id or local folder
    variant: str | None = None  # "fp16" for the half-precision files of the hub repo
    revision: str | None = None
    # load `.bin` (pickled) weights when a folder has no safetensors; off: such a folder is refused,
    # since unpickling can run code (allowed, they are unpickled with weights_only=True)
    allow_pickled_weights: bool = False
    # renders are resized to this side; None: the UNet's sample_size (IF-I-XL's stage I: 64 x 64)
    resolution: int | None = None
    guidance_scale: float = 100.0  # §3.2: omega = 100
    dtype: Dtype = "auto"
    max_length: int = 77  # T5 tokens, as the IF pipeline
    attention_slicing: bool = False
    cpu_offload: bool = False
    channels_last: bool = True


STABLE_DIFFUSION_PRESETS: dict[str, dict[str, Any]] = {
    "draft": {"guidance": {"resolution": 256}},
}


@dataclass
class FlowModelOptions(BackgroundDeclaration, CompileOptions, PromptOptions):
    """What the rectified-flow transformer backends (SD3, FLUX) share: the model folder, sizes,
    precision and memory options (`sds_guidance._flow`)."""

    model: str = ""  # hub id or local folder
    variant: str | None = None  # e.g. "fp16" to load the half-precision files of a hub repo
    revision: str | None = None
    # load `.bin` (pickled) weights when a folder has no safetensors; off: such a folder is refused,
    # since unpickling can run code (allowed, they are unpickled with weights_only=True)
    allow_pickled_weights: bool = False
    # RGB renders are resized to this side before VAE encoding; None: the model's own side (1024
    # for SD3 medium, the transformer's sample_size 128 x the VAE's 8; 1024 for FLUX.1, its
    # pipeline's default_sample_size 128 x 8)
    resolution: int | None = None
    # DreamFusion's omega (§3.2: 100, as for Stable Diffusion) in v_0 + (1 + omega)(v_y - v_0),
    # the pipelines' classifier-free guidance with guidance_scale = 1 + omega
    guidance_scale: float = 100.0
    # auto: bfloat16 on CUDA (the SD3 / FLUX pipelines' model cards load them so), float32 on CPU;
    # float16 halves memory too, but FLUX's activations overflow in it
    dtype: Dtype = "auto"
    encode: Literal["sample", "mean"] = "sample"  # draw from the VAE posterior, or take its mean
    # keep the transformer and VAE on the CPU between calls (CUDA only; needs accelerate): the
    # transformer moves to the GPU for each prediction (slow, a fraction of the memory)
    cpu_offload: bool = False
    max_sequence_length: int = 256  # T5 tokens (StableDiffusion3Pipeline: 256; FluxPipeline: 512)


@dataclass
class StableDiffusion3Config(FlowModelOptions):
    """Any diffusers Stable Diffusion 3 / 3.5 checkpoint (Esser et al. 2024): an MMDiT on 16-channel
    latents, rectified-flow velocity with the scheduler's time shift, CLIP L + CLIP G + T5 text."""

    model: str = "stabilityai/stable-diffusion-3-medium-diffusers"  # hub id or local folder
    max_sequence_length: int = 256  # StableDiffusion3Pipeline's default
    # leave T5-XXL (4.7B parameters, about 9.5 GB in half precision) unloaded: its tokens are zeros,
    # as StableDiffusion3Pipeline makes them when text_encoder_3 is None (the paper's §5.3.2 shows
    # the small loss in prompt following without it)
    drop_t5: bool = False


@dataclass
class FluxConfig(FlowModelOptions):
    """Any diffusers FLUX.1 checkpoint (Black Forest Labs): an MMDiT with single-stream blocks on
    2 x 2-packed 16-channel latents, CLIP L pooled + T5 text, a resolution-dependent time shift."""

    model: str = "black-forest-labs/FLUX.1-dev"  # hub id or local folder
    max_sequence_length: int = 512  # FluxPipeline's default (FLUX.1-dev)
    # "distilled": FLUX.1-dev's guidance embedding carries the guidance, one transformer call per
    # prediction (FluxPipeline with true_cfg_scale 1, its default); "true-cfg": classifier-free guidance
    # with the negative prompt's branch as well, twice the batch (FluxPipeline's true_cfg_scale = 1 + omega)
    cfg_mode: Literal["distilled", "true-cfg"] = "distilled"
    # the guidance embedding's scale for a guidance-distilled model (FluxPipeline's guidance_scale 3.5)
    distilled_guidance_scale: float = 3.5


@dataclass
class Zero123Config(ReferenceOptions, CompileOptions):
    """Zero-1-to-3 (Liu et al., ICCV 2023) or Stable Zero123 (Stability AI, 2023) in diffusers
    format as an image-conditioned prior (`sds_guidance.zero123`): a UNet on the noisy latent
    concatenated with the reference image's latent, cross-attending to the CLIP image embedding
    of the reference and the relative camera of each view. The reference options (its camera,
    foreground, the reference-view terms' weights) are `ReferenceOptions` (sds_core)."""

    # hub id or local folder in the diffusers layout of kxic/zero123-xl (unet, vae,
    # image_encoder, feature_extractor, scheduler, cc_projection); a Stable Zero123 port
    # (ashawkey/stable-zero123-diffusers) names its projection clip_camera_projection
    model: str = "kxic/zero123-xl"
    revision: str | None = None  # a branch, tag or commit of the hub repository
    variant: str | None = None  # e.g. "fp16" to load the half-precision files of a hub repo
    # load `.bin` (pickled) weights when a folder has no safetensors; off: such a folder is refused,
    # since unpickling can run code (allowed, they are unpickled with weights_only=True)
    allow_pickled_weights: bool = False
    # the relative camera fed to the projection with the CLIP embedding: "zero123" [d_polar,
    # sin d_azimuth, cos d_azimuth, d_radius] (Zero-1-to-3, threestudio zero123_guidance.py);
    # "stable-zero123" puts the reference's own polar angle (radians) in the last slot instead of
    # d_radius (threestudio stable_zero123_guidance.py, DreamGaussian; recalled, see docs/image-to-3d.md)
    camera_encoding: Literal["zero123", "stable-zero123"] = "zero123"
    # omega of eps_u + (1 + omega)(eps_c - eps_u): threestudio's zero123 / stable-zero123 configs and
    # the diffusers Zero1to3 pipeline guide with guidance_scale 3.0 = 1 + omega
    guidance_scale: float = 2.0
    # RGB renders are resized to this side before VAE encoding; None: the model's own (256 for
    # Zero-1-to-3: the UNet's sample_size 32 x the VAE's 8)
    resolution: int | None = None
    dtype: Dtype = "auto"  # auto: float16 on CUDA, float32 on CPU
    encode: Literal["sample", "mean"] = "sample"  # draw from the VAE posterior, or take its mean
    channels_last: bool = True  # memory format of the UNet on CUDA
    attention_slicing: bool = False  # lower memory, slower
    cpu_offload: bool = False  # unused by zero123 (its models are small); kept for the shared loaders
    # Zero-1-to-3 was trained on Objaverse renders on white: 3D generators with background=auto
    # render on it, and the reference image is composited on it
    background: tuple[float, float, float] | None = (1.0, 1.0, 1.0)


# threestudio configs/zero123.yaml lights the material ambient-only for the whole run
# (`ambient_only_steps: 100000`, recalled): the 3D generators stay on albedo, so the reference
# view's render is comparable with the photograph
ZERO123_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    name: {"default": {"generator": {"albedo_only_steps": 100_000}}} for name in ("nerf", "mesh", "gaussians")
}
# the novel views around the reference (DreamGaussian image mode: radius 2, fovy 49.1 deg;
# threestudio zero123: elevations -10 .. 80): at the reference's distance and field of view, so the
# relative camera's d_radius is 0 as in Zero-1-to-3's training pairs; focal = 0.5 / tan(49.1 / 2)
ZERO123_PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "cameras": {
            "elevation_range": [-10.0, 80.0],
            "distance_range": [2.0, 2.0],
            "focal_range": [1.0946, 1.0946],
            "position_jitter": 0.0,
            "target_std": 0.0,
            "up_std": 0.0,
        }
    }
}


@dataclass
class MVDreamConfig(StableDiffusionConfig):
    """MVDream (Shi et al., ICLR 2024) in the diffusers layout of its port (`sds_guidance.mvdream`):
    SD 2.1-base's UNet with a camera embedding added to the timestep embedding and self-attention
    across the views of one object, SD 2.1's VAE and text encoder. The other options are Stable
    Diffusion's."""

    # hub id or local folder in the layout of ashawkey/mvdream-sd2.1-diffusers (unet: a
    # MultiViewUNetModel config and weights; vae, text_encoder, tokenizer, scheduler: SD 2.1-base's)
    model: str = "ashawkey/mvdream-sd2.1-diffusers"
    # the views of one object denoised jointly (MVDream: 4); the cameras section must draw as many
    # (cameras.views_per_object, set by this guidance's preset)
    num_views: int = 4
    # None: the model's own side, the UNet's sample_size x the VAE's 8 (256 for sd-v2.1-base-4view)
    resolution: int | None = None
    # threestudio-mvdream's mvdream-sd21.yaml guides with 50 (recalled)
    guidance_scale: float = 50.0
    # MVDream's camera condition tells the model the view: no ", front view" suffixes (threestudio-mvdream)
    view_prompts: bool = False


# MVDream's multi-view steps: one object seen by 4 views 90 degrees apart at a shared elevation,
# distance and focal, looking at the origin (threestudio-mvdream's random-multiview-camera data:
# n_view 4, elevation 0 .. 30 deg, no jitter; recalled)
MVDREAM_CAMERAS: dict[str, Any] = {
    "views_per_object": 4,
    "batch_size": 4,
    "elevation_range": [0.0, 30.0],
    "position_jitter": 0.0,
    "target_std": 0.0,
    "up_std": 0.0,
}
MVDREAM_PRESETS: dict[str, dict[str, Any]] = {"default": {"cameras": MVDREAM_CAMERAS}}
# a generator's own presets may set the batch: the recipe puts the multi-view cameras back
MVDREAM_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    name: {"default": {"cameras": MVDREAM_CAMERAS}} for name in ("nerf", "mesh", "gaussians")
}
