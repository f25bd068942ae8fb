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
