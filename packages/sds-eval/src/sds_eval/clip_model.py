"""Loading CLIP through transformers (hub id or folder) and embedding captions and renders."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from sds_core.errors import SdsError


def _features(output: Any) -> Tensor:
    # transformers 4 returns a tensor; transformers 5 a model output whose pooler_output is projected.
    return output if isinstance(output, Tensor) else output.pooler_output


class ClipScorer:
    """A CLIP model and its processor, by hub id (e.g. openai/clip-vit-base-patch32) or folder."""

    def __init__(self, model: str, device: torch.device | str = "cpu") -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.name = model
        self.device = torch.device(device)
        try:
            clip: Any = CLIPModel.from_pretrained(model)
            self.model = clip.to(self.device).eval()
            self.processor = CLIPProcessor.from_pretrained(model)
        except OSError as exc:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            reason = "the model hub is unreachable (HF_HUB_OFFLINE=1)" if offline else f"it could not be loaded ({exc})"
            raise SdsError(
                f"CLIP model {model!r} is not available: {reason}; download it once where the hub is "
                "reachable and pass its local folder with --clip PATH"
            ) from exc

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
