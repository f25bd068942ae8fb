"""Small image helpers: tensors to PNG (atomically) and preview grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# the one atomic writer (umask-honouring), under the name the packages import
from sds_core.files import atomic_write


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) or (H, W, 3) floats in [0, 1] to an (H, W, 3) uint8 array."""
    image = image.detach().float().cpu()
    if image.dim() == 3 and image.shape[0] in (1, 3, 4):
        image = image.permute(1, 2, 0)
    if image.shape[-1] == 1:
        image = image.expand(*image.shape[:-1], 3)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def save_image(image: Tensor, path: Path, root: Path | None = None) -> None:
    """Save one RGB image tensor as PNG, atomically (root: the run folder it is in)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    atomic_write(Path(path), buffer.getvalue(), root=root)


def grid(images: Tensor, columns: int | None = None, pad: int = 2) -> Tensor:
    """(B, 3, H, W) images tiled into one (3, H', W') picture with white padding."""
    b, c, h, w = images.shape
    columns = columns or min(b, 4)
    rows = math.ceil(b / columns)
    canvas = torch.ones(c, rows * (h + pad) + pad, columns * (w + pad) + pad)
    for index in range(b):
        r, col = divmod(index, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[:, top : top + h, left : left + w] = images[index].detach().float().cpu().clamp(0, 1)
    return canvas
