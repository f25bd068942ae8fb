"""The sds-gaussians tests skip when the package (or trimesh) is not installed."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("trimesh")
pytest.importorskip("sds_gaussians")
