"""Prompt processing shared by the guidance backends.

- View-dependent prompts (DreamFusion §3.2, `sds_core.prompts`): ", front view" ... appended from
  the camera's label. A prompt that already names a view keeps it.
- Negative prompts: the text of the unconditional branch.
- Perp-Neg (Armandpour et al. 2023): the other views' prompts as negatives.
- An on-disk cache of text embeddings keyed by model and prompt, verified on load (`sds_core.cache`).

Every prompt a run can need is known when the guidance is built, so the backends encode them all
at once and may then release their text encoder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sds_core.api import (
    VIEWS,
    TensorSpec,
    cache_load,
    cache_root,
    cache_save,
    per_sample_prompts,
    split_view,
    view_prompt,
)
from sds_guidance.config import PromptOptions

# The views Perp-Neg contrasts (Armandpour et al. 2023 work with front / side / back).
_HORIZONTAL = ("front", "side", "back")


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


# the subfolders whose files an embedding depends on (SD3 adds a third encoder: T5)
_TEXT_PARTS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")


def model_key(model: str, *parts: str | int | None) -> str:
    """A cache key for a model: the hub id, or the folder's absolute path with its files' sizes and times."""
    path = Path(model).expanduser()
    if path.is_dir():
        stamps = sorted(
            (str(p.relative_to(path)), p.stat().st_size, int(p.stat().st_mtime))
            for p in path.rglob("*")
            if p.is_file() and p.parent.name in _TEXT_PARTS
        )
        return json.dumps([str(path.resolve()), stamps, *parts])
    return json.dumps([model, *parts])


class EmbeddingCache:
    """Text embeddings on disk (safetensors), one verified entry per (model key, prompt) (`sds_core.cache`).

    An entry is used only if it was written for this key and prompt with the user's cache key, and
    holds one float32 (L, D) tensor: `shape` when the backend knows it, else the shape the entries
    and the encoder's output agree on. Anything else is encoded again and the entry rewritten.
    """

    def __init__(self, root: Path | None, key: str, shape: tuple[int, int] | None = None) -> None:
        self.root = root
        self.key = key
        self.shape = shape

    def path(self, prompt: str) -> Path | None:
        if self.root is None:
            return None
        digest = hashlib.sha256(self.entry_key(prompt).encode()).hexdigest()[:32]
        return self.root / "embeddings" / f"{digest}.safetensors"

    def entry_key(self, prompt: str) -> str:
        """What an entry is computed from: the model key and the prompt."""
        return json.dumps([self.key, prompt])

    def load(self, prompt: str) -> Tensor | None:
        path = self.path(prompt)
        if path is None:
            return None
        shape: tuple[int | None, ...] = self.shape or (None, None)
        found = cache_load(path, self.entry_key(prompt), {"embedding": TensorSpec(shape, torch.float32)}, self.root)
        return None if found is None else found["embedding"]

    def save(self, prompt: str, embedding: Tensor) -> None:
        path = self.path(prompt)
        if path is not None:
            cache_save(path, self.entry_key(prompt), {"embedding": embedding.to(torch.float32)}, self.root)

    def _encode(self, prompts: list[str], encode: Callable[[list[str]], Tensor]) -> dict[str, Tensor]:
        with torch.no_grad():
            encoded = encode(prompts).detach().to("cpu", torch.float32)
        for prompt, embedding in zip(prompts, encoded, strict=True):
            self.save(prompt, embedding)
        return dict(zip(prompts, encoded, strict=True))

    def get(self, prompts: Sequence[str], encode: Callable[[list[str]], Tensor]) -> dict[str, Tensor]:
        """Embeddings (L, D) of `prompts`, encoding (in one batch) only those not on disk."""
        unique = list(dict.fromkeys(prompts))
        found = {p: e for p in unique if (e := self.load(p)) is not None}
        shapes = {tuple(e.shape) for e in found.values()}
        if len(shapes) > 1:  # entries that disagree (the model changed under its key): all encoded again
            found = {}
        missing = [p for p in unique if p not in found]
        if missing:
            found.update(self._encode(missing, encode))
            shape = tuple(found[missing[0]].shape)
            stale = [p for p in unique if tuple(found[p].shape) != shape]
            if stale:  # cached with another shape than the encoder's now
                found.update(self._encode(stale, encode))
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
        shape: tuple[int, int] | None = None,
    ) -> None:
        """shape: the encoder's (L, D), when known without running it (checked on cached entries)."""
        self.prompt = prompt
        self.options = options
        self.device = device
        self.dtype = dtype
        root = cache_root(options.cache_dir) if options.embedding_cache else None
        self._cache = EmbeddingCache(root, key, shape)
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
        enabled = views if self.options.view_prompts else None
        prompts = per_sample_prompts(self.prompt, enabled, batch_size, self.options.view_template)
        cond = self._stack(prompts)
        uncond = self._stack([self.options.negative_prompt] * batch_size)
        negative = weights = None
        fixed_view = split_view(self.prompt)[1]
        if self.options.perp_neg and views is not None and self.options.view_prompts and fixed_view is None:
            negative_prompts, weights = perp_neg_negatives(self.prompt, views, self.options)
            negative = torch.stack([self._stack(group) for group in negative_prompts])
            weights = weights.to(self.device)
        return TextConditioning(prompts, cond, uncond, negative, weights)
