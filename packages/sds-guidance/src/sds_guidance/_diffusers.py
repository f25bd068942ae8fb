"""What the diffusers backends share: loading, dtypes, devices, eps from the output.

A model folder is data, never code: every transformers load passes `trust_remote_code=False` (a
folder naming Python of its own is refused, never a prompt on stdin), every load of weights
`use_safetensors` (True unless `guidance.allow_pickled_weights`), the libraries are quiet while
a model loads (`quiet_loading`) and a failure is one sentence (`load_component`).
"""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from sds_core.api import ConfigError, SdsError, compile_enabled, compiled

T = TypeVar("T")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """ "auto": float16 on CUDA, float32 elsewhere (half precision is slow or missing on CPU)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("guidance.dtype=float16 is not supported on CPU; use float32 or bfloat16")
    return dtype


# what a from_pretrained call raises for a folder it cannot load: missing or damaged files (OSError,
# ValueError, safetensors' SafetensorError), hostile or damaged pickles (UnpicklingError, KeyError,
# EOFError, RuntimeError from torch.load's zip reader)
_LOAD_FAILURES: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    KeyError,
    EOFError,
    RuntimeError,
    pickle.PickleError,
)
PICKLED_OPTION = "guidance.allow_pickled_weights"


# the libraries whose Python warnings a load silences (huggingface_hub's deprecation notices for
# the arguments diffusers still passes, torch's about a storage it unpickles, ...)
QUIET_MODULES = r"(transformers|diffusers|huggingface_hub|accelerate|peft|safetensors|tokenizers|torch)(\.|$)"


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers, diffusers and huggingface_hub silent for the duration (a model load): their
    logs below CRITICAL dropped, their progress bars off, the Python warnings of `QUIET_MODULES`
    ignored; the previous settings restored after.

    CRITICAL, not ERROR: diffusers logs "An error occurred while trying to fetch ..." at ERROR
    before it raises, and a failed load is told by sds's own sentence. Silenced this way: the
    "Loading weights" bars, "Defaulting to unsafe serialization", accelerate's advice, the
    float32-modules notice of `ModelMixin.to`.
    """
    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as transformers_logging
    from huggingface_hub.utils import logging as hub_logging

    libraries = (transformers_logging, diffusers_logging, hub_logging)
    levels = [library.get_verbosity() for library in libraries]
    bars = (transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled())
    hub_bars = not hub_utils.are_progress_bars_disabled()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=QUIET_MODULES)
        for library in libraries:
            library.set_verbosity(logging.CRITICAL)
        transformers_logging.disable_progress_bar()  # huggingface_hub's bars with it
        diffusers_logging.disable_progress_bar()
        hub_utils.disable_progress_bars()  # (warns, ignored, when HF_HUB_DISABLE_PROGRESS_BARS decides)
        try:
            yield
        finally:
            for library, level in zip(libraries, levels, strict=True):
                library.set_verbosity(level)
            if bars[0]:
                transformers_logging.enable_progress_bar()
            if bars[1]:
                diffusers_logging.enable_progress_bar()
            if hub_bars:
                hub_utils.enable_progress_bars()
            else:
                hub_utils.disable_progress_bars()


def use_safetensors(allow_pickled_weights: bool) -> bool | None:
    """The `use_safetensors` of a weights load: True (safetensors only) unless pickled weights are
    allowed; then None, safetensors first and `.bin` after (transformers and diffusers unpickle
    them with `weights_only=True`)."""
    return None if allow_pickled_weights else True


def load_component(
    model: str,
    what: str,
    loader: Callable[[], T],
    *,
    part: str = "",
    revision: str | None = None,
    safetensors_only: bool = False,
    option: str = PICKLED_OPTION,
) -> T:
    """Run `loader` (a from_pretrained call of the `part` subfolder of `model`) with the libraries
    quiet (`quiet_loading`), turning a failure into one sentence: a missing model, a folder asking
    to run its own code (refused: every transformers load passes trust_remote_code=False), pickled
    weights when `safetensors_only` (`option` allows them), hostile or damaged weight files."""
    from safetensors import SafetensorError

    failures: tuple[type[BaseException], ...] = (*_LOAD_FAILURES, SafetensorError)
    with quiet_loading():
        try:
            return loader()
        except torch.cuda.OutOfMemoryError:
            raise
        except failures as exc:
            raise load_error(model, what, exc, part, revision, safetensors_only, option) from exc


def load_part(config: Any, what: str, part: str, loader: Callable[[], T]) -> T:
    """`load_component` for the `part` subfolder of `config.model`; `config` carries model, revision
    and allow_pickled_weights (both backends' configs do)."""
    return load_component(
        config.model,
        what,
        loader,
        part=part,
        revision=config.revision,
        safetensors_only=not config.allow_pickled_weights,
    )


def load_tokenizer(config: Any, what: str, part: str) -> Any:
    """The tokenizer in the `part` subfolder of `config.model`: it has no weights, and
    trust_remote_code=False refuses a folder's code."""
    from transformers import AutoTokenizer

    return load_part(
        config,
        what,
        part,
        lambda: AutoTokenizer.from_pretrained(
            config.model, subfolder=part, revision=config.revision, trust_remote_code=False
        ),
    )


def load_error(
    model: str,
    what: str,
    exc: BaseException,
    part: str = "",
    revision: str | None = None,
    safetensors_only: bool = False,
    option: str = PICKLED_OPTION,
) -> SdsError:
    """The sentence for `exc`, raised loading the `part` subfolder of `model` (a hub id or folder)."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    path = Path(model).expanduser()
    where = f"{model}/{part}" if part else model
    if isinstance(exc, GatedRepoError):
        return SdsError(f"{model} is gated on the model hub; accept its licence and log in (`hf auth login`)")
    if isinstance(exc, RepositoryNotFoundError):
        return SdsError(f"there is no model {model} on the model hub; pass a hub id or a local folder")
    if isinstance(exc, ValueError) and "trust_remote_code" in str(exc):
        return SdsError(
            f"{where} asks to run Python code of its own to load (an auto_map in its configuration), "
            f"and sds never runs a model folder's code; use a {what} folder without custom code"
        )
    if isinstance(exc, pickle.PickleError):
        return SdsError(
            f"the pickled weights of {where} were refused: unpickling them would run code, or they are "
            "damaged; use safetensors weights"
        )
    if isinstance(exc, OSError) and safetensors_only and pickled_only(model, part, revision):
        return SdsError(
            f"{where} holds only pickled weights (.bin), which can run code when loaded; convert them "
            f"to safetensors, or set {option}=true if you trust the folder"
        )
    reason = f"{type(exc).__name__}: {first_line(exc)}"
    if path.is_dir():
        return SdsError(f"{model} is not a complete {what} folder ({reason})")
    if not isinstance(exc, (OSError, ValueError)):  # the files are here but cannot be read
        return SdsError(
            f"the downloaded files of {model} cannot be loaded ({reason}); download them again "
            f"(`hf download {model} --force-download`)"
        )
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
        return SdsError(f"the folder {model} does not exist; pass a diffusers {what} folder")
    return SdsError(
        f"the weights of {model} are not on this machine and the model hub cannot be reached; "
        f"download them where it can (e.g. `hf download {model}`) and pass the folder with "
        f"--set guidance.model=/path/to/folder"
    )


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most `limit` characters (a sentence stays one line)."""
    lines = str(exc).strip().splitlines()
    line = lines[0].strip() if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def pickled_only(model: str, part: str = "", revision: str | None = None) -> bool:
    """Whether the `part` subfolder of `model` (a folder, or a hub id in the local cache) holds
    pickled weights (`*.bin`) and no safetensors."""
    path = Path(model).expanduser()
    folder = path if path.is_dir() else cached_snapshot(model, revision)
    if folder is None or not (folder / part).is_dir():
        return False
    names = [p.name for p in (folder / part).iterdir()]
    return any(n.endswith(".bin") for n in names) and not any(n.endswith(".safetensors") for n in names)


def cached_snapshot(model: str, revision: str | None) -> Path | None:
    """The folder of hub id `model` in the local cache, if it is there (never a download)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, revision=revision, local_files_only=True))
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), or not a hub id (HFValidationError)
        return None


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
        with quiet_loading():  # diffusers' `to` advises on float32 modules at every cast
            for module in modules:
                module.to(dtype=dtype)
                _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)
        return
    with quiet_loading():
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
    attention_slicing, channels_last and allow_pickled_weights (both backends' configs do).

    diffusers runs no code of a model folder for a concrete class (only `DiffusionPipeline` has
    `trust_remote_code`), and a scheduler has no weights (a JSON config): it takes no
    `use_safetensors`."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    extra, safe = hub_kwargs(config.variant, config.revision), use_safetensors(config.allow_pickled_weights)
    scheduler = load_part(
        config,
        what,
        "scheduler",
        lambda: DDPMScheduler.from_pretrained(model, subfolder="scheduler", revision=config.revision),
    )
    unet = load_part(
        config,
        what,
        "unet",
        lambda: UNet2DConditionModel.from_pretrained(
            model, subfolder="unet", torch_dtype=dtype, use_safetensors=safe, **extra
        ),
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


def encode_render(
    render: Any, channels: int, resolution: int, moments: Callable[[Any], Any], device: Any, dtype: Any, encode: str
) -> tuple[Any, bool]:
    """A latent backend's view of a render: (latents, True) for a latent render as it is (its
    channel count checked), else (the VAE's unscaled latents, False) of the RGB render in [0, 1]
    resized to `resolution` and encoded with gradient, the posterior's mean or a sample (`encode`);
    `moments` maps the [-1, 1] image to the posterior's parameters (the compiled encoder, or not)."""
    import torch.nn.functional as F
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    image = render.image
    if render.space == "latent":
        if image.shape[1] != channels:
            raise ConfigError(f"latent renders must have {channels} channels, not {image.shape[1]}")
        return image, True
    if image.shape[-2:] != (resolution, resolution):
        image = F.interpolate(image, (resolution, resolution), mode="bilinear", align_corners=False)
    posterior = DiagonalGaussianDistribution(moments((image * 2 - 1).to(device, dtype)))
    return (posterior.mean if encode == "mean" else posterior.sample()), False
