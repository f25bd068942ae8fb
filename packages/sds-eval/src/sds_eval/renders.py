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
    from sds_core.loop import resume_run

    trainer = resume_run(Path(run_dir), device, lock=False)  # read only: no lock, no writes
    cams = trainer.cameras.orbit(views, elevation=elevation, width=resolution, height=resolution).to(trainer.device)
    generator = trainer.generator
    generator.eval()
    with torch.no_grad():
        color = generator.preview(cams, trainer.step, shading=color_shading)
        if color.shape[1] != 3:
            color = trainer.guidance.decode(color)
        try:
            geometry: Tensor | None = generator.preview(cams, trainer.step, shading="textureless")
        except ValueError:
            geometry = None
    return RunRenders(
        Path(run_dir), trainer.prompt, color.float().cpu(), None if geometry is None else geometry.float().cpu()
    )
