"""CLIP R-Precision (Dream Fields; DreamFusion §4, Table 1).

For each rendered view, CLIP ranks every caption of the distractor set by cosine similarity to the
image; the view is a hit when the run's own caption ranks first. A run's R-Precision is its hit
rate over views; the aggregate is the hit rate over all views of all runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

# DreamFusion Table 1, R-Precision (%) of DreamFusion itself: colour / textureless ("geo").
TABLE1_DREAMFUSION: dict[str, dict[str, float]] = {
    "openai/clip-vit-base-patch32": {"color": 75.1, "geometry": 42.5},
    "openai/clip-vit-base-patch16": {"color": 77.5, "geometry": 46.6},
    "openai/clip-vit-large-patch14": {"color": 79.7, "geometry": 58.5},
}


def ranking_hits(image_embeds: Tensor, text_embeds: Tensor, true_index: int) -> Tensor:
    """A boolean per view: is caption `true_index` the most similar to that view's image?

    image_embeds: (V, D); text_embeds: (C, D); both need not be normalised.
    """
    images = torch.nn.functional.normalize(image_embeds.float(), dim=-1)
    texts = torch.nn.functional.normalize(text_embeds.float(), dim=-1)
    similarity = images @ texts.T  # (V, C)
    return similarity.argmax(dim=-1) == true_index


def r_precision(image_embeds: Tensor, text_embeds: Tensor, true_index: int) -> float:
    """The fraction of views whose top-ranked caption is the true one."""
    return float(ranking_hits(image_embeds, text_embeds, true_index).float().mean())
