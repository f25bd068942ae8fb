"""The 153 COCO captions of Dream Fields / DreamFusion's CLIP R-Precision, shipped as package data."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

CAPTIONS_FILE = "dreamfields_coco_val_153.txt"
CAPTIONS_SHA256 = "d238ee354f092f0d81ccad284d0ceb93a6489286085c98b2e3423ecdbf6c2c6e"


def normalize_caption(caption: str) -> str:
    """Dream Fields' normalisation: lower case, strip spaces, dots and commas at the ends, add a dot."""
    return caption.lower().strip(" .,") + "."


def read_captions(path: Path | None = None) -> list[str]:
    """Raw captions, one a line (the shipped 153 by default)."""
    if path is None:
        text = files("sds_eval").joinpath("data", CAPTIONS_FILE).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]
