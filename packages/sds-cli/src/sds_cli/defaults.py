"""The `sds` command's choices where a run names no plugin (sds-core names none but its loss)."""

from __future__ import annotations

DEFAULT_NAMES: dict[str, str] = {
    "generator": "nerf",  # the paper's generator (sds-nerf)
    "guidance": "shapes",  # the offline prior (sds-shapes, docs/design.md); pass stable-diffusion etc.
    "loss": "sds",
}

#: the preset of a run that names none (DreamFusion's own settings)
DEFAULT_PRESET = "paper"
