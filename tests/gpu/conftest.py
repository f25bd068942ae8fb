"""CUDA-only checks, run on a GPU machine by benchmarks/gpu_session.sh.

Every module here skips itself when torch sees no CUDA device, so CI's CPU machines collect and
skip them. The module names order a `pytest -x` run cheapest-first: the guidance and the mesh
(no compiled kernels), then the NeRF (nerfacc's JIT-built CUDA kernels).
"""

from __future__ import annotations

import os

import pytest

# The root conftest points TORCH_EXTENSIONS_DIR at a fresh folder for every pytest session; on a
# GPU machine nerfacc would then JIT-build its CUDA kernels again (minutes). Keep the folder the
# caller chose (gpu_session.sh builds the kernels there once, before pytest runs).
CALLER_EXTENSIONS_DIR = os.environ.get("TORCH_EXTENSIONS_DIR")


@pytest.fixture(autouse=True)
def _callers_torch_extensions(_isolated_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    if CALLER_EXTENSIONS_DIR:
        monkeypatch.setenv("TORCH_EXTENSIONS_DIR", CALLER_EXTENSIONS_DIR)
