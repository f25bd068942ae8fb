"""Shared test fixtures: a known-answer guidance plugin and real entry points in a temp folder.

Only torch, pluggy and sds_core here, so that the core's tests run with sds-core alone.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

# Before anything imports huggingface_hub (it reads this once): no test reaches a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
# Compiled extensions (nerfacc's kernels, if a CUDA function is ever called) never touch the user's
# cache: a folder of this process's own, removed when it exits, unless the caller named one.
if "TORCH_EXTENSIONS_DIR" not in os.environ:
    os.environ["TORCH_EXTENSIONS_DIR"] = _extensions = tempfile.mkdtemp(prefix="sds-torch-ext-")
    atexit.register(shutil.rmtree, _extensions, ignore_errors=True)

from sds_core.hookspecs import hookimpl
from sds_core.plugins import Catalog, PluginSpec, load_catalog
from sds_core.protocols import BuildContext, NoisePrediction, Render


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled extensions and caches go to a temp folder; no test reaches a model hub."""
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(root / "torch_extensions"))
    monkeypatch.setenv("SDS_CACHE_DIR", str(root / "sds_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SDS_BLOCK_PLUGINS", raising=False)


@dataclass
class TargetConfig:
    side: int = 8
    scale: float = 0.0  # default guidance scale omega


def sd_alphas_cumprod(steps: int = 1000) -> torch.Tensor:
    """Stable Diffusion's DDPM schedule (scaled_linear betas 0.00085 -> 0.012)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


class TargetGuidance:
    """Exact denoisers of two point masses: the conditional one at `cond_target`, the
    unconditional one at `uncond_target`, so every noise prediction is known in closed form."""

    space = "rgb"
    channels = 3
    num_train_timesteps = 1000

    def __init__(self, config: TargetConfig, context: BuildContext | None = None) -> None:
        self.resolution = self.latent_resolution = config.side
        self.default_guidance_scale = config.scale
        g = torch.Generator().manual_seed(1234)
        self.cond_target = torch.rand(1, 3, config.side, config.side, generator=g) * 2 - 1
        self.uncond_target = torch.rand(1, 3, config.side, config.side, generator=g) * 2 - 1
        self._alphas = sd_alphas_cumprod(self.num_train_timesteps)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas

    def prepare(self, render: Render) -> torch.Tensor:
        return render.image * 2 - 1

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) / 2

    def condition(self, render: Render, cameras: object) -> None:
        return None

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a = self._alphas.to(x_t.device)[t].view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * target.to(x_t.device)) / (1 - a).sqrt()

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, conditioning: object) -> NoisePrediction:
        self.calls.append((x_t.clone(), t.clone()))
        return NoisePrediction(cond=self.eps(x_t, t, self.cond_target), uncond=self.eps(x_t, t, self.uncond_target))


class TargetPlugin:
    """Registers the `target` guidance."""

    @hookimpl
    def sds_register_guidance(self, registry):
        registry.add(PluginSpec("target", TargetGuidance, TargetConfig, "Known-answer test guidance."))


@pytest.fixture(scope="session")
def published_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Folders of the published architectures made small (tests/fixtures/published.py), by name
    ("sd15", "sd21-base", "sd21-v", "if-i-xl", "clip-vit-base-patch32", ...), each built once a
    session. Skips when diffusers or transformers is not installed."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            pytest.importorskip("diffusers")
            pytest.importorskip("transformers")
            from tests.fixtures.published import build

            built[name] = build(name, tmp_path_factory.mktemp(name))
        return built[name]

    return get


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog(extra_plugins={"target-plugin": (TargetPlugin(), "sds-tests", "0")})


@pytest.fixture
def context_factory() -> Callable[..., BuildContext]:
    """BuildContext(device=cpu, prompt, total_steps) for building a guidance directly."""

    def make(prompt: str, config: dict[str, Any] | None = None) -> BuildContext:
        return BuildContext(device=torch.device("cpu"), prompt=prompt, total_steps=100, config=config or {})

    return make


@pytest.fixture
def install_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Install a real distribution (dist-info with entry_points.txt) holding a plugin module.

    importlib.metadata finds it on sys.path exactly as it finds a pip-installed package.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def install(dist: str, module: str, code: str, entry_name: str | None = None, attr: str = "") -> None:
        (site / f"{module}.py").write_text(textwrap.dedent(code), encoding="utf-8")
        info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n", encoding="utf-8")
        value = f"{module}:{attr}" if attr else module
        (info / "entry_points.txt").write_text(f"[sds]\n{entry_name or dist} = {value}\n", encoding="utf-8")
        modules.append(module)
        importlib.invalidate_caches()

    install.site = site  # type: ignore[attr-defined]
    yield install
    for module in modules:
        sys.modules.pop(module, None)
