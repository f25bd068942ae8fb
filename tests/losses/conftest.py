"""Fixtures of the loss tests: the exact `shapes` prior (small) and a tiny Stable Diffusion.

The tiny SD pipeline is the one of tests/guidance (built from config by its `build_tiny_sd`), saved
once per session and loaded by the real backend from that folder, offline.
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
def tiny_sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("diffusers")
    from tests.guidance.conftest import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd-losses"), "epsilon")


@pytest.fixture
def make_sd(tiny_sd_folder: Path) -> Callable[..., Any]:
    """A StableDiffusionGuidance on the tiny pipeline (fresh each call: it may hold added prompts)."""
    from sds_guidance.config import StableDiffusionConfig
    from sds_guidance.stable_diffusion import StableDiffusionGuidance
    from tests.guidance.conftest import TINY_SIDE

    def make(prompt: str = "a red cube") -> Any:
        config = StableDiffusionConfig(model=str(tiny_sd_folder), resolution=TINY_SIDE)
        return StableDiffusionGuidance(config, context(prompt))

    return make


@pytest.fixture(scope="session")
def tiny_if_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("diffusers")
    from tests.guidance.conftest import build_tiny_if

    return build_tiny_if(tmp_path_factory.mktemp("tiny-if-losses"))


@pytest.fixture
def make_if(tiny_if_folder: Path) -> Callable[..., Any]:
    """A DeepFloydIFGuidance on the tiny IF pipeline (learned variance: 6 output channels)."""
    from sds_guidance.config import DeepFloydIFConfig
    from sds_guidance.deepfloyd_if import DeepFloydIFGuidance
    from tests.guidance.conftest import TINY_SIDE

    def make(prompt: str = "a red cube") -> Any:
        config = DeepFloydIFConfig(model=str(tiny_if_folder), resolution=TINY_SIDE)
        return DeepFloydIFGuidance(config, context(prompt))

    return make


@pytest.fixture(scope="session")
def shapes_guidance() -> Any:
    pytest.importorskip("sds_guidance")
    from sds_guidance.config import ShapesConfig
    from sds_guidance.shapes.guidance import ShapesGuidance

    return ShapesGuidance(ShapesConfig(resolution=16, views=16, supersample=1, cache=False), context())
