"""Shared fixtures of the sds-nerf tests: a temporary torch-extensions folder and fixed fields."""

from __future__ import annotations

import os
import tempfile

import pytest

# nerfacc compiles CUDA kernels into TORCH_EXTENSIONS_DIR when a CUDA function is called; keep
# that out of the user's cache (and the CPU tests never call one).
os.environ.setdefault("TORCH_EXTENSIONS_DIR", tempfile.mkdtemp(prefix="sds-nerf-ext-"))

torch = pytest.importorskip("torch")
pytest.importorskip("nerfacc")
pytest.importorskip("sds_nerf")
