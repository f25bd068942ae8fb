"""View-dependent prompts (DreamFusion §3.2) and the sds cache folder, shared by every prior. No torch.

", front view" / ", side view" / ", back view" / ", overhead view" is appended from the camera's
label (`CameraBatch.views`, whose thresholds are set in the `cameras` config section). A prompt
that already names a view keeps it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from sds_core.protocols import ViewLabel

VIEWS: tuple[str, ...] = get_args(ViewLabel)
DEFAULT_VIEW_TEMPLATE = "{prompt}, {view} view"
_VIEW_SUFFIX = re.compile(r"\s*,\s*(" + "|".join(VIEWS) + r")\s+view\s*\.?\s*$", re.IGNORECASE)


def split_view(prompt: str) -> tuple[str, str | None]:
    """("a red cube", "side") for "a red cube, side view"; (prompt, None) without a view suffix."""
    match = _VIEW_SUFFIX.search(prompt)
    if match is None:
        return prompt.strip(), None
    return prompt[: match.start()].strip(), match.group(1).lower()


def view_prompt(prompt: str, view: str, template: str = DEFAULT_VIEW_TEMPLATE) -> str:
    """The prompt for one view (§3.2)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; accepted: {', '.join(VIEWS)}")
    return template.format(prompt=prompt, view=view)


def per_sample_prompts(
    prompt: str, views: Sequence[str] | None, batch_size: int, template: str = DEFAULT_VIEW_TEMPLATE
) -> list[str]:
    """One prompt per sample: view-dependent when views are given (None: the prompt as is)."""
    base, fixed = split_view(prompt)
    if views is None or fixed is not None:
        return [prompt] * batch_size
    if len(views) != batch_size:
        raise ValueError(f"{len(views)} view labels for a batch of {batch_size}")
    return [view_prompt(base, v, template) for v in views]


def cache_root(cache_dir: str | None = None) -> Path:
    """The sds cache folder: `cache_dir`, else $SDS_CACHE_DIR, else ~/.cache/sds (per user).

    Whatever names it (a run's config.json may), `sds_core.cache` uses it only if it is the
    caller's own folder, and trusts only the entries signed with the caller's key kept there."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SDS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "sds"
