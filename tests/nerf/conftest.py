"""Shared fixtures of the sds-nerf tests: a temporary torch-extensions folder and fixed fields."""

from __future__ import annotations

import pytest

# nerfacc compiles CUDA kernels into TORCH_EXTENSIONS_DIR when a CUDA function is called:
# tests/conftest.py points it at a temp folder of its own (and the CPU tests never call one).

torch = pytest.importorskip("torch")
pytest.importorskip("nerfacc")
pytest.importorskip("sds_nerf")
