"""Fixtures of the loss tests: the exact `shapes` prior (small) and a tiny Stable Diffusion.

The tiny SD 2.1-base and IF-I-XL pipelines are the published architectures made small
(tests/fixtures/published.py, the session's `published_model` folders), loaded by the real
backends from their folders, offline, at the models' own resolutions (SD 64 px, 8 x 8 latents;
IF 8 px).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from sds_core.protocols import BuildContext


def context(prompt: str = "a red cube", guidance: Any = None) -> BuildContext:
    return BuildContext(device=torch.device("cpu"), prompt=prompt, total_steps=100, guidance=guidance)


@pytest.fixture(scope="session")
def tiny_sd_folder(published_model: Callable[[str], Path]) -> Path:
    return published_model("sd21-base")


@pytest.fixture
def make_sd(tiny_sd_folder: Path) -> Callable[..., Any]:
    """A StableDiffusionGuidance on the tiny pipeline (fresh each call: it may hold added prompts)."""
    from sds_guidance.config import StableDiffusionConfig
    from sds_guidance.stable_diffusion import StableDiffusionGuidance

    def make(prompt: str = "a red cube") -> Any:
        config = StableDiffusionConfig(model=str(tiny_sd_folder))
        return StableDiffusionGuidance(config, context(prompt))

    return make


@pytest.fixture(scope="session")
def tiny_if_folder(published_model: Callable[[str], Path]) -> Path:
    return published_model("if-i-xl")


@pytest.fixture
def make_if(tiny_if_folder: Path) -> Callable[..., Any]:
    """A DeepFloydIFGuidance on the tiny IF pipeline (learned variance: 6 output channels)."""
    from sds_guidance.config import DeepFloydIFConfig
    from sds_guidance.deepfloyd_if import DeepFloydIFGuidance

    def make(prompt: str = "a red cube") -> Any:
        config = DeepFloydIFConfig(model=str(tiny_if_folder))
        return DeepFloydIFGuidance(config, context(prompt))

    return make


@pytest.fixture(scope="session")
def shapes_guidance() -> Any:
    pytest.importorskip("sds_guidance")
    from sds_guidance.config import ShapesConfig
    from sds_guidance.shapes.guidance import ShapesGuidance

    return ShapesGuidance(ShapesConfig(resolution=16, views=16, supersample=1, cache=False), context())
