"""Options of the `shapes` prior (no torch: read by `sds plugins` and `sds --help`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sds_core.api import PAPER_CPU_SIDE


@dataclass
class ShapesConfig:
    """The exact offline prior over a procedural world of coloured primitives (docs/design.md)."""

    # 64 x 64 as DreamFusion's renders (A.2); references are rendered at this side
    resolution: int = 64
    # reference cameras per object, drawn from the DreamFusion camera distribution (A.2)
    views: int = 64
    seed: int = 0  # seed of the reference cameras and lights
    supersample: int = 2  # anti-aliasing of the reference renders (samples per pixel side)
    # a solid background colour (RGB in [0, 1]); exposed as guidance.background
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # "camera" (default): the references of a render are every object traced exactly
    # (trace.py) from the render's own camera (intrinsics, distance, look-at, up, light)
    # rotated about the vertical axis by camera_offsets azimuths spanning +-window_degrees, so any
    # camera of A.2's distribution is served exactly; conditional set: the prompt's object from
    # those cameras, unconditional: every object from them. "fixed": `views` reference cameras
    # drawn once from A.2 and the view_conditioning below (also used without cameras, or when
    # the prompt names a view). Measured in benchmarks/nerf_shapes.py (sds-nerf README).
    references: Literal["camera", "fixed"] = "camera"
    camera_offsets: int = 7
    # samples per pixel side of the camera-exact references: 1 traces one ray through each pixel
    # centre, as the NeRF renders it compares with (and costs a quarter of 2)
    camera_supersample: int = 1
    # The fixed references' conditional set is the prompt's object; with cameras it is narrowed to
    # "bucket": the references in the render's view bucket (the analogue of §3.2's view prompts),
    # "window": the references within window_degrees of the render's viewing direction, or
    # "none": all of the object's references. A view suffix in the prompt always narrows to it.
    view_conditioning: Literal["none", "bucket", "window"] = "window"
    window_degrees: float = 30.0
    # omega: an exact prior needs little guidance (the paper's 100 is for Imagen, §3.2); a
    # large omega over-saturates towards what separates the object from the others (measured:
    # PSNR to the truth 19.1 dB at omega 5, 14.5 dB at omega 100). See README.
    guidance_scale: float = 5.0
    chunk_size: int = 4096  # references per matrix product
    cache: bool = True  # keep the reference renders on disk
    cache_dir: str | None = None  # None: $SDS_CACHE_DIR or ~/.cache/sds


SHAPES_PRESETS: dict[str, dict[str, Any]] = {
    # references at the side of the paper-cpu preset's renders
    "paper-cpu": {"guidance": {"resolution": PAPER_CPU_SIDE}},
    "draft": {
        "guidance": {"resolution": 32, "views": 32},
        "cameras": {"width": 32, "height": 32},
    },
}

# The framing of the fixed references (`references = "fixed"`): cameras that always look at the
# origin from one distance and focal length, without A.2's jitter (a deviation). With few fixed
# reference views, renders must be framed as the references are (sds-nerf's README); pass it as
# the run's `cameras` section (e.g. in a --config file) when training against fixed references.
FIXED_FRAMING_CAMERAS: dict[str, Any] = {
    "target_std": 0.0,
    "position_jitter": 0.0,
    "up_std": 0.0,
    "distance_range": (1.25, 1.25),
    "focal_range": (1.5, 1.5),
}
