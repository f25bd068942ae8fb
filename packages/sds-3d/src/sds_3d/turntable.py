"""The turntable of final/: frames [colour | textureless] orbiting the object, written as
turntable.mp4 (H.264) and turntable.gif."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sds_3d.meshes import write_file
from sds_core.api import CameraBatch, ExportContext, atomic_write, check_image_side, to_uint8

#: a generator's `render_chunked(cameras, mode)`: images (B, 3, H, W) and opacities (B, 1, H, W)
ChunkedRender = Callable[[CameraBatch, str], tuple[Tensor, Tensor]]


def turntable_frames(
    render: ChunkedRender, context: ExportContext, frames: int, resolution: int, elevation: float
) -> list[np.ndarray]:
    """Frames [colour | textureless] side by side, orbiting at `elevation` degrees."""
    check_image_side(resolution, "generator.video_resolution")
    sampler = context.camera_sampler
    cams = sampler.orbit(frames, elevation=elevation, width=resolution, height=resolution)
    cams = cams.to(context.device)
    out = []
    for i in range(frames):
        one = cams[i]
        color, _ = render(one, "albedo")
        with torch.enable_grad():
            geo, _ = render(one, "textureless")
        out.append(np.concatenate([to_uint8(color[0]), to_uint8(geo[0])], axis=1))
    return out


def write_turntable(out_dir: Path, frames: Sequence[np.ndarray], fps: int, formats: Sequence[str]) -> list[Path]:
    """turntable.mp4 (H.264 through imageio-ffmpeg's bundled ffmpeg) and turntable.gif."""
    from PIL import Image

    paths: list[Path] = []
    if "mp4" in formats:
        import imageio.v2 as imageio

        def mp4(tmp: Path) -> None:
            # sizes are padded up to a multiple of 16 by ffmpeg's macro_block_size
            imageio.mimwrite(tmp, list(frames), fps=fps, codec="libx264", quality=8, macro_block_size=16)

        paths.append(atomic_write(out_dir / "turntable.mp4", mp4, keep_suffix=True))
    if "gif" in formats:
        images = [Image.fromarray(f) for f in frames]
        buffer = io.BytesIO()
        images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
        paths.append(write_file(out_dir / "turntable.gif", buffer.getvalue()))
    return paths
