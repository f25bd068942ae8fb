"""Options every 3D generator shares (no torch: read by `sds plugins`): shading, background and
export. A generator's config inherits them, so their keys stay flat (`--set generator.ambient=0.2`,
`generator.background=solid`, `generator.video_frames=30`) and are written once, here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EXPORT_FORMATS: tuple[str, ...] = ("glb", "obj", "ply", "mp4", "gif", "html")


@dataclass
class ShadingOptions:
    """When and how to shade (DreamFusion §3.1, A.2; `sds_core.shading`)."""

    albedo_only_steps: int = 1000  # A.2: albedo only for the first 1k steps
    shaded_probability: float = 0.75  # A.2: p(shaded) = 0.75 afterwards
    textureless_probability: float = 0.5  # A.2: of the shaded renders, half textureless
    ambient: float = 0.1  # A.2: l_a
    diffuse: float = 0.9  # A.2: l_rho


@dataclass
class BackgroundOptions:
    """What shows where the object does not (A.2; `sds_3d.background`)."""

    # "mlp": the paper's MLP on the positionally encoded ray direction; "solid": background_color;
    # "random": a random colour per image while training (solid background_color otherwise);
    # "auto": solid in the guidance's own background colour when it declares one (the `shapes`
    # prior does: its references are rendered on it), else the paper's MLP
    background: Literal["auto", "mlp", "solid", "random"] = "auto"
    background_color: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB in [0, 1]
    background_frequencies: int = 6  # positional encoding bands of the MLP's ray direction
    background_hidden: int = 64  # hidden width of the MLP


@dataclass
class ExportOptions:
    """What final/ holds (`sds_3d.final.write_final`)."""

    texture_size: int = 1024  # side of the baked UV texture of mesh.glb / mesh.obj
    video_frames: int = 60  # turntable frames (one orbit)
    video_resolution: int = 128  # side of each turntable view
    video_fps: int = 24  # frames per second of turntable.mp4 and turntable.gif
    video_elevation: float = 15.0  # degrees above the horizon of the turntable's orbit
    # what `sds generate` writes (sds export --format picks among them)
    export_formats: tuple[str, ...] = EXPORT_FORMATS
