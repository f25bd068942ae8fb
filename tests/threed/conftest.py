"""The sds-3d tests skip when the package (or the mesh libraries it writes with) is not installed."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("sds_3d")
