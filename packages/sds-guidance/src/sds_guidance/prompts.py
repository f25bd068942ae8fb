"""Prompt processing shared by the guidance backends.

- View-dependent prompts (DreamFusion §3.2): ", front view" / ", side view" / ", back view" /
  ", overhead view" appended from the camera's label (`CameraBatch.views`, whose thresholds are
  set in the `cameras` config section). A prompt that already names a view keeps it.
- Negative prompts: the text of the unconditional branch.
- Perp-Neg (Armandpour et al. 2023): the other views' prompts as negatives.
- An on-disk cache of text embeddings keyed by model and prompt.

Every prompt a run can need is known when the guidance is built, so the backends encode them all
at once and may then release their text encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sds_core.files import atomic_write
from sds_guidance.config import PromptOptions

VIEWS: tuple[str, ...] = ("front", "side", "back", "overhead")
# The views Perp-Neg contrasts (Armandpour et al. 2023 work with front / side / back).
_HORIZONTAL = ("front", "side", "back")
_VIEW_SUFFIX = re.compile(r"\s*,\s*(front|side|back|overhead)\s+view\s*\.?\s*$", re.IGNORECASE)


def split_view(prompt: str) -> tuple[str, str | None]:
    """("a red cube", "side") for "a red cube, side view"; (prompt, None) without a view suffix."""
    match = _VIEW_SUFFIX.search(prompt)
    if match is None:
        return prompt.strip(), None
    return prompt[: match.start()].strip(), match.group(1).lower()


def view_prompt(prompt: str, view: str, template: str = "{prompt}, {view} view") -> str:
    """The prompt for one view (§3.2)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; accepted: {', '.join(VIEWS)}")
    return template.format(prompt=prompt, view=view)


def per_sample_prompts(prompt: str, views: Sequence[str] | None, batch_size: int, options: PromptOptions) -> list[str]:
    """One prompt per sample: view-dependent when views are given and enabled."""
    base, fixed = split_view(prompt)
    if views is None or not options.view_prompts or fixed is not None:
        return [prompt] * batch_size
    if len(views) != batch_size:
        raise ValueError(f"{len(views)} view labels for a batch of {batch_size}")
    return [view_prompt(base, v, options.view_template) for v in views]


def perp_neg_negatives(prompt: str, views: Sequence[str], options: PromptOptions) -> tuple[list[list[str]], Tensor]:
    """Perp-Neg negatives: for each sample the two horizontal views it is not, weight `perp_neg_weight`.

    Returns K=2 lists of B prompts and weights (K, B). An overhead sample is contrasted with the
    side and back views (the top is seen from the front half in A.2's camera distribution).
    """
    base, _ = split_view(prompt)
    negatives: list[list[str]] = [[], []]
    for view in views:
        others = [v for v in _HORIZONTAL if v != view][:2]
        for k, other in enumerate(others):
            negatives[k].append(view_prompt(base, other, options.view_template))
    weights = torch.full((2, len(views)), float(options.perp_neg_weight))
    return negatives, weights


def all_prompts(prompt: str, options: PromptOptions) -> list[str]:
    """Every text a run may encode: the prompt, its view variants and the negative prompt."""
    base, fixed = split_view(prompt)
    texts = [prompt, options.negative_prompt]
    if options.view_prompts and fixed is None:
        texts += [view_prompt(base, v, options.view_template) for v in VIEWS]
    return list(dict.fromkeys(texts))


def cache_root(cache_dir: str | None = None) -> Path:
    """The sds cache folder: `cache_dir`, else $SDS_CACHE_DIR, else ~/.cache/sds."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SDS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "sds"


def model_key(model: str, *parts: str | int | None) -> str:
    """A cache key for a model: the hub id, or the folder's absolute path with its files' sizes and times."""
    path = Path(model).expanduser()
    if path.is_dir():
        stamps = sorted(
            (str(p.relative_to(path)), p.stat().st_size, int(p.stat().st_mtime))
            for p in path.rglob("*")
            if p.is_file() and p.parent.name in ("text_encoder", "tokenizer")
        )
        return json.dumps([str(path.resolve()), stamps, *parts])
    return json.dumps([model, *parts])


class EmbeddingCache:
    """Text embeddings on disk (safetensors), one file per (model key, prompt)."""

    def __init__(self, root: Path | None, key: str) -> None:
        self.root = root
        self.key = key

    def path(self, prompt: str) -> Path | None:
        if self.root is None:
            return None
        digest = hashlib.sha256(json.dumps([self.key, prompt]).encode()).hexdigest()[:32]
        return self.root / "embeddings" / f"{digest}.safetensors"

    def load(self, prompt: str) -> Tensor | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.path(prompt)
        if path is None or not path.is_file():
            return None
        try:
            return load_file(str(path))["embedding"]
        except (OSError, SafetensorError, KeyError):
            return None  # a damaged entry is recomputed

    def save(self, prompt: str, embedding: Tensor) -> None:
        from safetensors.torch import save_file

        path = self.path(prompt)
        if path is None:
            return
        tensors = {"embedding": embedding.detach().to("cpu", torch.float32).contiguous()}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))

    def get(self, prompts: Sequence[str], encode: Callable[[list[str]], Tensor]) -> dict[str, Tensor]:
        """Embeddings (L, D) of `prompts`, encoding (in one batch) only those not on disk."""
        found: dict[str, Tensor] = {}
        for prompt in prompts:
            cached = self.load(prompt)
            if cached is not None:
                found[prompt] = cached
        missing = [p for p in dict.fromkeys(prompts) if p not in found]
        if missing:
            with torch.no_grad():
                encoded = encode(missing).detach().to("cpu", torch.float32)
            for prompt, embedding in zip(missing, encoded, strict=True):
                found[prompt] = embedding
                self.save(prompt, embedding)
        return found


@dataclass
class TextConditioning:
    """Per-sample text embeddings for one batch (what `Guidance.condition` returns)."""

    prompts: list[str]
    cond: Tensor  # (B, L, D)
    uncond: Tensor  # (B, L, D)
    negative: Tensor | None = None  # (K, B, L, D) Perp-Neg negatives
    negative_weights: Tensor | None = None  # (K, B)


class PromptEmbeddings:
    """All the embeddings a run needs, computed once (the text encoder can go afterwards)."""

    def __init__(
        self,
        prompt: str,
        options: PromptOptions,
        encode: Callable[[list[str]], Tensor],
        key: str,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.prompt = prompt
        self.options = options
        self.device = device
        self.dtype = dtype
        root = cache_root(options.cache_dir) if options.embedding_cache else None
        self._cache = EmbeddingCache(root, key)
        # kept until the first prediction (`release`), so that losses may add texts at build time
        self._encode: Callable[[list[str]], Tensor] | None = encode
        self.table: dict[str, Tensor] = {}
        self.add(all_prompts(prompt, options))

    def add(self, texts: Sequence[str]) -> None:
        """Encode `texts` (those not known yet); only before `release`."""
        missing = [text for text in texts if text not in self.table]
        if not missing:
            return
        if self._encode is None:
            raise RuntimeError("prompts must be added before the first noise prediction (the text encoder is gone)")
        for text, emb in self._cache.get(missing, self._encode).items():
            self.table[text] = emb.to(device=self.device, dtype=self.dtype)

    def release(self) -> None:
        """Drop the reference to the text encoder (called at the first noise prediction)."""
        self._encode = None

    def negative_condition(self, conditioning: TextConditioning | None, text: str) -> TextConditioning | None:
        """`conditioning` whose conditional branch is `text` (None: only register the text)."""
        self.add([text])
        if conditioning is None:
            return None
        batch = conditioning.cond.shape[0]
        return TextConditioning([text] * batch, self._stack([text] * batch), conditioning.uncond)

    def _stack(self, prompts: Sequence[str]) -> Tensor:
        return torch.stack([self.table[p] for p in prompts])

    def condition(self, batch_size: int, views: Sequence[str] | None) -> TextConditioning:
        """Embeddings for a batch: view-dependent when `views` is given (None for 2D generators)."""
        prompts = per_sample_prompts(self.prompt, views, batch_size, self.options)
        cond = self._stack(prompts)
        uncond = self._stack([self.options.negative_prompt] * batch_size)
        negative = weights = None
        fixed_view = split_view(self.prompt)[1]
        if self.options.perp_neg and views is not None and self.options.view_prompts and fixed_view is None:
            negative_prompts, weights = perp_neg_negatives(self.prompt, views, self.options)
            negative = torch.stack([self._stack(group) for group in negative_prompts])
            weights = weights.to(self.device)
        return TextConditioning(prompts, cond, uncond, negative, weights)
