"""Shared fixtures of the sds-guidance tests: an isolated cache, offline hub, tiny diffusers models.

The tiny Stable Diffusion and IF pipelines are the published architectures made small
(tests/fixtures/published.py: configs read from the real repositories, only widths, depths and
vocabulary shrunk), saved with `save_pretrained` to a temporary folder and loaded back by the
backends from that folder with HF_HUB_OFFLINE=1, so the real loading code runs without a network.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# compiled extensions go to a temp folder (tests/conftest.py); caches never touch the user's folders
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# the old kinds of `tiny_models`, and the published architecture each now is (tests/fixtures)
KINDS = {"sd-epsilon": "sd21-base", "sd-v": "sd21-v", "if": "if-i-xl"}
KINDS["sdxl"] = "sdxl-base"  # Stable Diffusion XL base (two CLIP encoders, text_time embedding)
# the side each works at by default: SD sample_size 8 x its VAE's downscale 8, IF sample_size 8
SIDE = {"sd-epsilon": 64, "sd-v": 96, "if": 8}
SIDE["sdxl"] = 128  # SDXL: sample_size 128 / 8 = 16 latents x its VAE's downscale 8


@pytest.fixture(autouse=True)
def sds_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-session cache folder ($SDS_CACHE_DIR) shared by the tests (reference renders are reused)."""
    root = tmp_path_factory.getbasetemp() / "sds-cache"
    monkeypatch.setenv("SDS_CACHE_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def tiny_models(published_model: Callable[[str], Path]) -> Callable[[str], Path]:
    """A factory of tiny model folders by kind: "sd-epsilon" (SD 2.1-base), "sd-v" (SD 2.1, 768,
    v-prediction), "if" (IF-I-XL), or any name of tests/fixtures/configs; each built once."""
    return lambda kind: published_model(KINDS.get(kind, kind))


@pytest.fixture(scope="session")
def flow_models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Folders of the tiny SD3 medium and FLUX.1-dev pipelines (tests/guidance/flow_models.py), each built once."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            pytest.importorskip("diffusers")
            from tests.guidance.flow_models import build

            built[name] = build(name, tmp_path_factory.mktemp(name))
        return built[name]

    return get
