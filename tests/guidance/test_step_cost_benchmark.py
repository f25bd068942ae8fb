"""benchmarks/step_cost.py on the CPU at its small sizes: every generator's full step against the
prior's own cost, on the tiny published architectures (no timing is asserted, only what is reported)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("sds_nerf")
pytest.importorskip("sds_mesh")
pytest.importorskip("sds_gaussians")

ROOT = Path(__file__).resolve().parents[2]


def _benchmark():
    spec = importlib.util.spec_from_file_location("step_cost", ROOT / "benchmarks" / "step_cost.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["step_cost"] = module
    spec.loader.exec_module(module)
    return module


def _check(row: dict, prior_parts: set[str]) -> None:
    steps = {k: v for k, v in row.items() if k.startswith("step_") and k != "step_ms"}
    assert set(steps) == {"step_render_ms", "step_guidance_ms", "step_backward_ms", "step_optimizer_ms"}
    assert math.isclose(sum(steps.values()), row["step_ms"], rel_tol=1e-9)
    priors = {k: v for k, v in row.items() if k.startswith("prior_") and k != "prior_ms"}
    assert set(priors) == prior_parts and all(v > 0 for v in priors.values())
    assert math.isclose(sum(priors.values()), row["prior_ms"], rel_tol=1e-9)
    assert math.isclose(row["ratio"], row["step_ms"] / row["prior_ms"], rel_tol=1e-9)
    assert math.isclose(row["projected_10k_min"], row["step_ms"] * 10_000 / 60_000, rel_tol=1e-9)
    assert row["peak_mb"] > 0 and row["device"] == "cpu" and row["dtype"] == "float32"


def test_every_generator_against_stable_diffusion(tiny_models, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rows.json"
    argv = ["--device", "cpu", "--model", str(tiny_models("sd-epsilon")), "--steps", "1", "--warmup", "0"]
    rows = _benchmark().main([*argv, "--json", str(out)])
    printed = capsys.readouterr().out
    assert [row["generator"] for row in rows] == ["nerf-mlp", "nerf-hashgrid", "mesh", "gaussians", "image"]
    for row in rows:
        _check(row, {"prior_unet_pair_ms", "prior_vae_encoder_ms"})
        assert row["generator"] in printed
        assert row["guidance_resolution"] == 64 and row["render_side"] == 16 and row["compile"] == "auto"
    stored = json.loads(out.read_text())
    assert stored["rows"] == rows and stored["command"][:2] == ["python", "benchmarks/step_cost.py"]
    assert {"date", "commit", "machine", "torch", "cuda", "driver", "device"} <= set(stored)
    assert "step/prior" in printed and "10k steps" in printed


def test_deepfloyd_if_prior_is_the_unet_pair_alone(tiny_models) -> None:
    argv = ["--device", "cpu", "--guidance", "deepfloyd-if", "--model", str(tiny_models("if"))]
    (row,) = _benchmark().main([*argv, "--generators", "nerf-hashgrid", "--steps", "1", "--warmup", "0"])
    _check(row, {"prior_unet_pair_ms"})
    assert row["guidance"] == "deepfloyd-if" and row["generator"] == "nerf-hashgrid"
