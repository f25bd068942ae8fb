"""Loading CLIP through transformers (hub id or folder) and embedding captions and renders.

A model folder is data, never code: the loads pass `trust_remote_code=False` (a folder whose
configuration names Python of its own is refused, without a prompt on stdin) and read only
safetensors weights unless `allow_pickled_weights`. transformers and huggingface_hub are quiet
while CLIP loads (`_quiet_loading`: no log lines, no progress bars); a failure is one sentence.
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sds_core.api import SdsError

# what from_pretrained raises for a folder it cannot load: missing or damaged files (OSError,
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
# the libraries whose Python warnings a load silences
_QUIET_MODULES = r"(transformers|huggingface_hub|safetensors|tokenizers|torch)(\.|$)"


def _features(output: Any) -> Tensor:
    # transformers 4 returns a tensor; transformers 5 a model output whose pooler_output is projected.
    return output if isinstance(output, Tensor) else output.pooler_output


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers and huggingface_hub silent for the duration: logs below CRITICAL dropped,
    progress bars off, their Python warnings ignored; the previous settings restored after
    (sds-guidance's `quiet_loading`, less diffusers)."""
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as transformers_logging
    from huggingface_hub.utils import logging as hub_logging

    libraries = (transformers_logging, hub_logging)
    levels = [library.get_verbosity() for library in libraries]
    bars, hub_bars = transformers_logging.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=_QUIET_MODULES)
        for library in libraries:
            library.set_verbosity(logging.CRITICAL)
        transformers_logging.disable_progress_bar()  # huggingface_hub's bars with it
        hub_utils.disable_progress_bars()
        try:
            yield
        finally:
            for library, level in zip(libraries, levels, strict=True):
                library.set_verbosity(level)
            if bars:
                transformers_logging.enable_progress_bar()
            if hub_bars:
                hub_utils.enable_progress_bars()
            else:
                hub_utils.disable_progress_bars()


def _pickled_only(model: str) -> bool:
    """Whether `model` (a folder, or a hub id in the local cache) holds `*.bin` weights and no safetensors."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(model, local_files_only=True))
        except (OSError, ValueError):  # not cached, or not a hub id
            return False
    names = [p.name for p in folder.iterdir()]
    return any(n.endswith(".bin") for n in names) and not any(n.endswith(".safetensors") for n in names)


def _load_error(model: str, exc: BaseException, allow_pickled_weights: bool) -> SdsError:
    """The one sentence for `exc`, raised loading CLIP `model`."""
    lines = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"
    if isinstance(exc, ValueError) and "trust_remote_code" in str(exc):
        return SdsError(
            f"CLIP model {model!r} asks to run Python code of its own to load (an auto_map in its "
            "configuration), and sds never runs a model folder's code; use a CLIP folder without custom code"
        )
    if isinstance(exc, pickle.PickleError):
        return SdsError(
            f"the pickled weights of CLIP model {model!r} were refused: unpickling them would run code, "
            "or they are damaged; use safetensors weights"
        )
    if isinstance(exc, OSError) and not allow_pickled_weights and _pickled_only(model):
        return SdsError(
            f"CLIP model {model!r} holds only pickled weights (.bin), which can run code when loaded; "
            "convert them to safetensors, or pass --allow-pickled-weights (allow_pickled_weights=True) "
            "if you trust the folder"
        )
    if not isinstance(exc, OSError):
        return SdsError(f"CLIP model {model!r} could not be loaded ({detail})")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    reason = "the model hub is unreachable (HF_HUB_OFFLINE=1)" if offline else f"it could not be loaded ({detail})"
    return SdsError(
        f"CLIP model {model!r} is not available: {reason}; download it once where the hub is "
        "reachable and pass its local folder with --clip PATH"
    )


class ClipScorer:
    """A CLIP model and its processor, by hub id (e.g. openai/clip-vit-base-patch32) or folder.

    `allow_pickled_weights`: load `.bin` weights when the model has no safetensors (unpickled by
    transformers with `weights_only=True`); off, such a model is refused in one sentence."""

    def __init__(self, model: str, device: torch.device | str = "cpu", allow_pickled_weights: bool = False) -> None:
        from safetensors import SafetensorError
        from transformers import CLIPModel, CLIPProcessor

        self.name = model
        self.device = torch.device(device)
        safe = None if allow_pickled_weights else True  # None: safetensors first, then .bin
        failures: tuple[type[BaseException], ...] = (*_LOAD_FAILURES, SafetensorError)
        with _quiet_loading():
            try:
                clip: Any = CLIPModel.from_pretrained(model, use_safetensors=safe, trust_remote_code=False)
                self.processor = CLIPProcessor.from_pretrained(model, trust_remote_code=False)  # no weights
            except torch.cuda.OutOfMemoryError:
                raise
            except failures as exc:
                raise _load_error(model, exc, allow_pickled_weights) from exc
        self.model = clip.to(self.device).eval()

    @torch.no_grad()
    def embed_texts(self, captions: list[str]) -> Tensor:
        inputs = self.processor(text=captions, return_tensors="pt", padding=True, truncation=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return _features(self.model.get_text_features(**inputs)).float().cpu()

    @torch.no_grad()
    def embed_images(self, images: Tensor) -> Tensor:
        """images: (B, 3, H, W) RGB in [0, 1]; resized and normalised by CLIP's own processor."""
        pixels = [(img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy() for img in images]
        inputs = self.processor(images=pixels, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device)
        return _features(self.model.get_image_features(pixel_values=pixel_values)).float().cpu()
