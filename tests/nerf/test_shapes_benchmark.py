"""A short version of benchmarks/nerf_shapes.py: one object, asserting IoU >= 0.5 (CI, CPU)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("sds_guidance.shapes.metrics")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="measured 2026-11: the draft field stays semi-transparent on the shapes prior (max density "
    "6.7 after 300 steps), IoU 0.0 at the export level tau > 10 (0.34 at tau > 1); see the sds-nerf report",
)
def test_red_sphere_reaches_iou_one_half(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("nerf_shapes", ROOT / "benchmarks" / "nerf_shapes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["nerf_shapes"] = module
    spec.loader.exec_module(module)
    row = module.run_object("a red sphere", tmp_path / "run", "draft", {"run": {"steps": 150}}, seed=0)
    print(row)
    assert row["iou"] >= 0.5, row
