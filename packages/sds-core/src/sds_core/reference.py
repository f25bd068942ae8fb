"""The reference image of an image-to-3D run (`sds generate --image`): read, its foreground found,
kept in the run folder with its SHA-256, and the camera it was taken from.

The image is hostile data: it is read only as a regular file of bounded size, decoded by Pillow
within `sds_core.limits.MAX_IMAGE_SIDE` a side (Pillow's own decompression-bomb check on), and
nothing in it is executed. Its foreground is its alpha channel, or, for an RGB image, every pixel
whose colour differs from the median colour of the border by more than
`guidance.background_tolerance` (no segmentation model is ever downloaded).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from sds_core.cameras import look_at, spherical_to_cartesian, view_labels
from sds_core.config import CameraConfig
from sds_core.errors import ConfigError, SdsError
from sds_core.files import atomic_write, read_regular
from sds_core.limits import MAX_IMAGE_SIDE
from sds_core.protocols import CameraBatch
from sds_core.reference_options import ReferenceOptions

MAX_IMAGE_BYTES = 64 * 1024 * 1024  # a PNG of 4096 x 4096 RGBA is at most about this
#: what Pillow may decode, and the name of the copy in the run folder
FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
COPY_NAMES = tuple(f"reference.{ext}" for ext in FORMATS.values())
MIN_FOREGROUND = 1e-3  # a mask covering less of the image than this is no foreground
MAX_RECENTRED_SIDE = 1024  # the side of a recentred image at most (DreamGaussian's process.py writes 256)


@runtime_checkable
class ImageConditioned(Protocol):
    """A guidance conditioned on a reference image (Zero-1-to-3): given once, before training,
    the image (1, 3, H, W) on the guidance's background in [0, 1] and its camera."""

    def set_reference(self, image: Tensor, camera: CameraBatch) -> None: ...


@dataclass(frozen=True)
class ReferenceImage:
    """The file's bytes and digest, and the decoded image: RGB (1, 3, H, W) and mask (1, 1, H, W)."""

    data: bytes
    sha256: str
    extension: str
    rgb: Tensor
    mask: Tensor

    @property
    def file_name(self) -> str:
        return f"reference.{self.extension}"

    def record(self, source: str | None = None) -> dict[str, Any]:
        """What config.json records of it."""
        return {"file": self.file_name, "sha256": self.sha256, **({"source": source} if source else {})}

    def write(self, root: Path) -> Path:
        """Copy the image into the run folder, atomically."""
        return atomic_write(root / self.file_name, self.data, root=root)

    def on(self, background: tuple[float, float, float]) -> Tensor:
        """The image composited on a solid background colour."""
        colour = torch.tensor(background, dtype=self.rgb.dtype).view(1, 3, 1, 1)
        return self.rgb * self.mask + colour * (1 - self.mask)


def read_image_file(path: Path) -> bytes:
    """The bytes of a user's image: a regular file (a FIFO is refused without blocking) of bounded size."""
    shown = str(path)[:200]
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"--image {shown} is not a plain file; pass a PNG, JPEG or WebP image")
        if info.st_size > MAX_IMAGE_BYTES:
            raise ConfigError(f"--image {shown} is larger than {MAX_IMAGE_BYTES >> 20} MiB; pass a smaller image")
        return read_regular(path)
    except FileNotFoundError:
        raise ConfigError(f"--image {shown} does not exist; pass a PNG, JPEG or WebP image") from None
    except OSError as exc:
        raise ConfigError(f"--image {shown} cannot be read ({exc.strerror})") from None


def decode(data: bytes, what: str, options: ReferenceOptions) -> ReferenceImage:
    """Decode and segment the image bytes `data` (`what` names them in errors)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
            fmt = str(image.format)
            width, height = image.size
            if max(width, height) > MAX_IMAGE_SIDE or min(width, height) < 8:
                raise ConfigError(f"{what} is {width} x {height} pixels; accepted: 8 to {MAX_IMAGE_SIDE} a side")
            image.load()
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            pixels = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    except Image.UnidentifiedImageError:
        raise ConfigError(f"{what} is not a PNG, JPEG or WebP image Pillow recognises") from None
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise ConfigError(f"{what} cannot be read as a PNG, JPEG or WebP image ({reason})") from None
    rgb = pixels[..., :3]
    mask = pixels[..., 3] if has_alpha else None
    if mask is None or mask.min() >= 1.0:  # no transparency: the plain background is the border's colour
        mask = _foreground_by_border(rgb, options.background_tolerance, what)
    if float((mask > 0.5).mean()) < MIN_FOREGROUND:
        raise ConfigError(f"{what} has no foreground (its alpha or its difference from the background is empty)")
    if options.recenter_border > 0:
        rgb, mask = _recenter(rgb, mask, options.recenter_border)
    return ReferenceImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        extension=FORMATS[fmt],
        rgb=torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float(),
        mask=torch.from_numpy(np.ascontiguousarray(mask))[None, None].float(),
    )


def _foreground_by_border(rgb: np.ndarray, tolerance: float, what: str) -> np.ndarray:
    """Pixels farther than `tolerance` (any channel) from the median colour of the border."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    colour = np.median(border, axis=0)
    away = np.abs(rgb - colour).max(axis=-1) > tolerance
    edge = np.concatenate([away[0], away[-1], away[:, 0], away[:, -1]])
    if edge.mean() > 0.5:
        raise ConfigError(
            f"{what} has no plain background to separate its foreground from (most of its border differs "
            "from the border's median colour); pass an RGBA image or one on a plain background"
        )
    return away.astype(np.float32)


def _recenter(rgb: np.ndarray, mask: np.ndarray, border: float) -> tuple[np.ndarray, np.ndarray]:
    """The foreground's bounding box centred in a square whose sides leave `border` of it empty
    each side (DreamGaussian's process.py recentring); RGB outside the mask is kept as it is."""
    ys, xs = np.nonzero(mask > 0.5)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rgb, mask = rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    h, w = y1 - y0, x1 - x0
    side = max(8, math.ceil(max(h, w) / max(1.0 - 2 * border, 1e-3)))
    if side > MAX_RECENTRED_SIDE:  # the priors read 256 px: a large crop is area-averaged first
        scale = MAX_RECENTRED_SIDE / side
        h, w, side = max(1, round(h * scale)), max(1, round(w * scale)), MAX_RECENTRED_SIDE
        crop = torch.from_numpy(np.ascontiguousarray(np.concatenate([rgb, mask[..., None]], -1)))
        crop = torch.nn.functional.interpolate(crop.permute(2, 0, 1)[None], (h, w), mode="area")[0]
        rgb, mask = crop[:3].permute(1, 2, 0).numpy(), crop[3].numpy()
    out_rgb = np.ones((side, side, 3), dtype=np.float32)
    out_mask = np.zeros((side, side), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    out_rgb[top : top + h, left : left + w] = rgb
    out_mask[top : top + h, left : left + w] = mask
    return out_rgb, out_mask


def load_reference(path: Path, options: ReferenceOptions) -> ReferenceImage:
    """The user's image `path` (`sds generate --image`)."""
    return decode(read_image_file(Path(path)), f"--image {str(path)[:200]}", options)


def load_kept(root: Path, record: Any, options: ReferenceOptions) -> ReferenceImage:
    """The copy a run folder keeps, checked against the SHA-256 its config.json recorded."""
    if (
        not isinstance(record, dict)
        or record.get("file") not in COPY_NAMES
        or not isinstance(record.get("sha256"), str)
    ):
        raise SdsError(f"the image record of {root}/config.json is damaged; it names no reference.png / .jpg / .webp")
    path = root / record["file"]
    try:
        data = read_regular(path, root)
    except OSError as exc:
        raise SdsError(f"{path}, the run's reference image, cannot be read ({exc.strerror or exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != record["sha256"]:
        raise SdsError(f"{path} is not the image this run started from (its SHA-256 differs from config.json's)")
    return decode(data, str(path), options)


def reference_camera(options: ReferenceOptions, cameras: CameraConfig) -> CameraBatch:
    """The camera of the reference image at the training renders' size, looking at the origin."""
    elevation = torch.tensor([float(options.reference_elevation)])
    azimuth = torch.tensor([float(options.reference_azimuth) % 360.0])
    distance = torch.tensor([float(options.reference_distance)])
    if not 0.0 < options.reference_fov < 180.0 or options.reference_distance <= 0:
        raise ConfigError("guidance.reference_fov must be in (0, 180) degrees and reference_distance positive")
    position = spherical_to_cartesian(elevation, azimuth, distance)
    c2w = look_at(position, torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]))
    # a vertical field of view on square pixels: focal = (H / 2) / tan(fov / 2)
    focal = cameras.height / 2 / math.tan(math.radians(options.reference_fov) / 2)
    return CameraBatch(
        c2w=c2w,
        focal=torch.tensor([focal]),
        width=cameras.width,
        height=cameras.height,
        elevation=elevation,
        azimuth=azimuth,
        distance=distance,
        light_position=position * 1.2,
        views=view_labels(elevation, azimuth, cameras),
    )


def reference_options(guidance_config: Any, guidance_name: str, has_image: bool) -> ReferenceOptions | None:
    """The options of an image-conditioned guidance, None for a text one; one sentence when the
    image and the guidance do not go together."""
    if isinstance(guidance_config, ReferenceOptions):
        if not has_image:
            raise ConfigError(f"the guidance {guidance_name!r} is conditioned on an image; pass one with --image PATH")
        return guidance_config
    if has_image:
        raise ConfigError(
            f"the guidance {guidance_name!r} is text-only and takes no --image; use an image-conditioned "
            "guidance (--guidance zero123)"
        )
    return None
