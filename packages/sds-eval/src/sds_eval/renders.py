"""Evaluation renders of a run: K azimuths at a fixed elevation, in colour and textureless."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


@dataclass
class RunRenders:
    run_dir: Path
    prompt: str
    color: Tensor  # (K, 3, H, W) in [0, 1]
    geometry: Tensor | None  # textureless renders; None for generators without geometry (2D images)


def render_run(
    run_dir: Path,
    views: int = 8,
    elevation: float = 30.0,
    resolution: int = 128,
    color_shading: str | None = None,
    device: str = "auto",
) -> RunRenders:
    """Load a run's last checkpoint and render it around the object (DreamFusion §4: 30 deg elevation)."""
    from sds_core.api import load_run

    run = load_run(Path(run_dir), device)  # read only: no lock, no writes, no guidance model for RGB renders
    cams = run.cameras.orbit(views, elevation=elevation, width=resolution, height=resolution).to(run.device)
    generator = run.generator
    with torch.no_grad():
        color = run.decode(generator.preview(cams, run.step, shading=color_shading))
        try:
            geometry: Tensor | None = generator.preview(cams, run.step, shading="textureless")
        except ValueError:
            geometry = None
    return RunRenders(
        Path(run_dir), run.prompt, color.float().cpu(), None if geometry is None else geometry.float().cpu()
    )
