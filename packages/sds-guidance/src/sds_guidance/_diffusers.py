"""What the diffusers backends share: loading with clear errors, dtypes, devices, eps from the output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from sds_core.compiling import compile_enabled, compiled
from sds_core.errors import ConfigError, SdsError

T = TypeVar("T")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """ "auto": float16 on CUDA, float32 elsewhere (half precision is slow or missing on CPU)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("guidance.dtype=float16 is not supported on CPU; use float32 or bfloat16")
    return dtype


def load_component(model: str, what: str, loader: Callable[[], T]) -> T:
    """Run `loader` (a from_pretrained call), turning a missing model into one clear sentence."""
    try:
        return loader()
    except (OSError, ValueError) as exc:  # huggingface_hub's errors are OSError / ValueError subclasses
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        path = Path(model).expanduser()
        if isinstance(exc, GatedRepoError):
            raise SdsError(
                f"{model} is gated on the model hub; accept its licence and log in (`hf auth login`)"
            ) from exc
        if isinstance(exc, RepositoryNotFoundError):
            raise SdsError(f"there is no model {model} on the model hub; pass a hub id or a local folder") from exc
        if path.is_dir():
            raise SdsError(f"{model} is not a complete {what} folder ({type(exc).__name__}: {exc})") from exc
        if path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
            raise SdsError(f"the folder {model} does not exist; pass a diffusers {what} folder") from exc
        raise SdsError(
            f"the weights of {model} are not on this machine and the model hub cannot be reached; "
            f"download them where it can (e.g. `hf download {model}`) and pass the folder with "
            f"--set guidance.model=/path/to/folder"
        ) from exc


def hub_kwargs(variant: str | None, revision: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if variant:
        kwargs["variant"] = variant
    if revision:
        kwargs["revision"] = revision
    return kwargs


def setup_attention(unet: Any, slicing: bool) -> None:
    """Each attention layer keeps a processor of its own kind: scaled-dot-product attention
    (torch's fused kernels), or sliced attention for low memory.

    A UNet mixes kinds: SD's layers are plain attention, IF's add key/value projections of the
    text (`AttnAddedKVProcessor2_0`); one processor for all would drop IF's added keys and values.
    diffusers already gives every layer the SDPA processor of its kind on torch 2, and
    `set_attention_slice` swaps each for the sliced processor of the same kind
    (`SlicedAttnProcessor` / `SlicedAttnAddedKVProcessor`), so neither is replaced here.
    """
    if slicing:
        unet.set_attention_slice("auto")


def freeze(*modules: Any) -> None:
    for module in modules:
        if module is not None:
            module.requires_grad_(False)
            module.eval()


def place(modules: Sequence[Any], device: torch.device, dtype: torch.dtype, offload: bool) -> None:
    """Move modules to the device, or (CUDA and `offload`) chain accelerate's CPU-offload hooks."""
    if offload and device.type == "cuda":
        try:
            from accelerate import cpu_offload_with_hook
        except ImportError as exc:
            raise SdsError("guidance.cpu_offload needs accelerate; pip install 'sds-guidance[offload]'") from exc
        hook = None
        for module in modules:
            module.to(dtype=dtype)
            _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)
        return
    for module in modules:
        module.to(device=device, dtype=dtype)


def module_device(module: Any, fallback: torch.device) -> torch.device:
    """Where a module's inputs must go (the execution device when offloaded)."""
    hook = getattr(module, "_hf_hook", None)
    execution = getattr(hook, "execution_device", None)
    if execution is not None:
        return torch.device(execution)
    try:
        return next(module.parameters()).device  # type: ignore[no-any-return]
    except StopIteration:
        return fallback


def epsilon_from_output(output: Tensor, x_t: Tensor, alphas_cumprod_t: Tensor, prediction_type: str) -> Tensor:
    """The model's output as an eps prediction.

    v-prediction (Salimans & Ho 2022): v = sqrt(a) eps - sqrt(1 - a) x0 and x_t = sqrt(a) x0 +
    sqrt(1 - a) eps give eps = sqrt(a) v + sqrt(1 - a) x_t.
    """
    if prediction_type == "epsilon":
        return output
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    a = alphas_cumprod_t.to(x_t.dtype).view(shape)
    if prediction_type == "v_prediction":
        return a.sqrt() * output + (1 - a).sqrt() * x_t
    if prediction_type == "sample":
        return (x_t - a.sqrt() * output) / (1 - a).sqrt()
    raise SdsError(f"unsupported prediction type {prediction_type!r}; accepted: epsilon, v_prediction, sample")


def conditioning_batch(cond: Tensor, uncond: Tensor, negative: Tensor | None) -> Tensor:
    """[cond; uncond; negative_1; ...; negative_K] along the batch axis."""
    parts = [cond, uncond]
    if negative is not None:
        parts.extend(negative.unbind(0))
    return torch.cat(parts)


def split_predictions(eps: Tensor, batch_size: int, with_negatives: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    chunks = eps.split(batch_size)
    negative = torch.stack(chunks[2:]) if with_negatives else None
    return chunks[0], chunks[1], negative


def load_scheduler_and_unet(
    model: str, what: str, config: Any, device: torch.device, dtype: torch.dtype
) -> tuple[Any, Any]:
    """The DDPM scheduler and the frozen UNet of a diffusers model (hub id or folder), set up for SDS:
    attention slicing as configured, channels-last on CUDA. `config` carries variant, revision,
    attention_slicing and channels_last (both backends' configs do)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    extra = hub_kwargs(config.variant, config.revision)
    scheduler = load_component(
        model, what, lambda: DDPMScheduler.from_pretrained(model, subfolder="scheduler", revision=config.revision)
    )
    unet = load_component(
        model, what, lambda: UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=dtype, **extra)
    )
    freeze(unet)
    setup_attention(unet, config.attention_slicing)
    if device.type == "cuda" and config.channels_last:
        unet.to(memory_format=torch.channels_last)
    return scheduler, unet


def compile_wanted(config: Any, device: torch.device) -> bool:
    """Whether `config.compile` compiles on `device`, checked before any model is loaded. Offloaded
    modules move between devices at every call: "auto" leaves them eager, "on" is refused."""
    offloaded = config.cpu_offload and device.type == "cuda"
    if offloaded and config.compile == "on":
        raise ConfigError("guidance.compile=on cannot be combined with guidance.cpu_offload; turn one of them off")
    return not offloaded and compile_enabled(config.compile, device)


def compile_for(fn: Callable[..., T], config: Any, wanted: bool) -> Callable[..., T]:
    """`fn` (the UNet, the VAE encoder) compiled when `wanted`, at fixed shapes: a run's batch and
    side do not change."""
    return compiled(fn, wanted, dynamic=False, mode=config.compile_mode, backend=config.compile_backend)


def declare_background(guidance: Any, config: Any) -> None:
    """Set `guidance.background` (the `DeclaresBackground` capability) from `config.background`,
    only when the config gives one: an undeclared backdrop leaves generators on the paper's MLP."""
    if config.background is None:
        return
    values = tuple(config.background)
    if len(values) != 3 or not all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in values):
        raise ConfigError(f"guidance.background must be three numbers in [0, 1] (RGB), not {config.background!r}")
    guidance.background = tuple(float(v) for v in values)
