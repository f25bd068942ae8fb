"""The reference image of `sds generate --image` (sds_core.reference) and the reference-view terms
(sds_core.reference_terms): foreground by alpha or by the border's colour, recentring, bounds,
the reference camera in sds's convention, the weight schedule, and the terms' gradients."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sds_core.config import CameraConfig
from sds_core.errors import ConfigError, SdsError
from sds_core.limits import MAX_IMAGE_SIDE
from sds_core.protocols import Render
from sds_core.reference import decode, load_kept, load_reference, reference_camera, reference_options
from sds_core.reference_options import ReferenceOptions
from sds_core.reference_terms import ReferenceTerms, ramp


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _disc(mode: str = "RGB", background: tuple[int, ...] = (255, 255, 255), side: int = 40) -> Image.Image:
    image = Image.new(mode, (side, side), background)
    ImageDraw.Draw(image).rectangle((10, 12, 19, 27), fill=(200, 30, 30, 255)[: len(mode)])
    return image


def test_an_rgb_image_on_a_plain_background_is_segmented_by_its_border() -> None:
    options = ReferenceOptions(recenter_border=0.0)
    reference = decode(_png(_disc(background=(40, 200, 40))), "test", options)
    mask = reference.mask[0, 0]
    assert reference.rgb.shape == (1, 3, 40, 40) and mask.shape == (40, 40)
    assert mask[12:28, 10:20].min() == 1.0 and mask.sum() == 16 * 10  # exactly the rectangle
    assert reference.extension == "png" and len(reference.sha256) == 64


def test_rgba_alpha_is_the_mask_and_recentring_follows_dreamgaussian() -> None:
    reference = decode(_png(_disc("RGBA", (0, 0, 0, 0))), "test", ReferenceOptions(recenter_border=0.2))
    mask = reference.mask[0, 0]
    # the 16 x 10 box in a square of side ceil(16 / 0.6) = 27, centred
    assert mask.shape == (27, 27) and mask.sum() == 160
    rows, cols = torch.nonzero(mask > 0.5, as_tuple=True)
    assert (rows.min() + rows.max()) / 2 == pytest.approx(13, abs=0.5)
    assert (cols.min() + cols.max()) / 2 == pytest.approx(13, abs=0.5)
    white = reference.on((1.0, 1.0, 1.0))
    assert torch.allclose(white[0, :, 0, 0], torch.ones(3))  # outside the mask: the background


def test_images_without_a_foreground_or_too_large_are_refused(tmp_path: Path) -> None:
    options = ReferenceOptions()
    with pytest.raises(ConfigError, match="no foreground"):
        decode(_png(Image.new("RGB", (32, 32), (9, 9, 9))), "plain", options)
    noise = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8")
    with pytest.raises(ConfigError, match="no plain background"):
        decode(_png(Image.fromarray(noise)), "noise", options)
    with pytest.raises(ConfigError, match="pixels"):
        decode(_png(Image.new("L", (MAX_IMAGE_SIDE + 1, 8))), "wide", options)
    with pytest.raises(ConfigError, match="does not exist"):
        load_reference(tmp_path / "missing.png", options)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a plain file"):  # refused without blocking
        load_reference(fifo, options)


def test_the_kept_copy_is_checked_against_its_digest(tmp_path: Path) -> None:
    options = ReferenceOptions()
    reference = decode(_png(_disc()), "test", options)
    reference.write(tmp_path)
    kept = load_kept(tmp_path, reference.record(), options)
    assert torch.equal(kept.rgb, reference.rgb) and torch.equal(kept.mask, reference.mask)
    (tmp_path / "reference.png").write_bytes(_png(_disc(background=(0, 0, 0))))
    with pytest.raises(SdsError, match="SHA-256"):
        load_kept(tmp_path, reference.record(), options)
    with pytest.raises(SdsError, match="damaged"):
        load_kept(tmp_path, {"file": "../config.json", "sha256": reference.sha256}, options)


def test_the_guidance_and_the_image_must_go_together() -> None:
    assert reference_options(object(), "shapes", has_image=False) is None
    with pytest.raises(ConfigError, match="text-only"):
        reference_options(object(), "shapes", has_image=True)
    with pytest.raises(ConfigError, match="--image PATH"):
        reference_options(ReferenceOptions(), "zero123", has_image=False)


def test_the_reference_camera_is_in_sds_convention() -> None:
    """Elevation 0, azimuth 0, distance 2: on +x (the front), looking at the origin, with the focal
    of a 49.1 degree vertical field of view."""
    camera = reference_camera(ReferenceOptions(), CameraConfig(width=32, height=32))
    torch.testing.assert_close(camera.position[0], torch.tensor([2.0, 0.0, 0.0]))
    torch.testing.assert_close(camera.c2w[0, :3, 2], torch.tensor([1.0, 0.0, 0.0]))  # looks along -z: to -x
    assert camera.focal.item() == pytest.approx(16 / math.tan(math.radians(49.1 / 2)))
    assert camera.views == ["front"]


def test_ramp_is_threestudios_schedule() -> None:
    value = (100.0, 500.0, 1000.0, 400.0)
    assert [ramp(value, s) for s in (0, 100, 250, 400, 9000)] == [500.0, 500.0, 750.0, 1000.0, 1000.0]
    assert ramp((0.0, 7.0, 7.0, 0.0), 5) == 7.0


class _Toy(torch.nn.Module):
    """A generator whose render is a parameter image, shaded as told."""

    view_dependent = True

    def __init__(self, shading: str = "albedo") -> None:
        super().__init__()
        self.image = torch.nn.Parameter(torch.full((1, 3, 8, 8), 0.5))
        self.alpha = torch.nn.Parameter(torch.full((1, 1, 8, 8), 0.5))
        self.shading = shading

    def render(self, cameras, step):
        return Render(image=self.image, opacity=self.alpha, shading=[self.shading])


def test_the_terms_pull_the_reference_render_to_the_image() -> None:
    options = ReferenceOptions(recenter_border=0.0, lambda_rgb=(0, 10, 10, 0), lambda_mask=(0, 2, 2, 0))
    image = decode(_png(_disc(side=16)), "test", options)
    camera = reference_camera(options, CameraConfig(width=8, height=8))
    terms = ReferenceTerms(options, camera, image, (1.0, 1.0, 1.0))
    toy = _Toy()
    out = terms(toy, step=0)
    assert set(out) == {"ref_rgb", "ref_mask"}
    sum(out.values()).backward()
    target = torch.nn.functional.interpolate(image.mask, (8, 8), mode="area")
    expected = 2 * 2 * (toy.alpha.detach() - target) / target.numel()  # d/d alpha of 2 * MSE
    torch.testing.assert_close(toy.alpha.grad, expected)
    assert set(terms(_Toy("textureless"), step=0)) == {"ref_mask"}  # a shaded render is not the photo
    every = ReferenceTerms(ReferenceOptions(reference_every=3), camera, image, (1.0, 1.0, 1.0))
    assert every(toy, step=1) == {} and set(every(toy, step=3)) == {"ref_rgb", "ref_mask"}


def test_a_large_foreground_is_recentred_within_the_bound() -> None:
    from sds_core.reference import MAX_RECENTRED_SIDE

    image = Image.new("RGBA", (1400, 1400), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((100, 100, 1299, 1299), fill=(10, 200, 10, 255))
    reference = decode(_png(image), "large", ReferenceOptions(recenter_border=0.2))
    assert reference.mask.shape[-2:] == (MAX_RECENTRED_SIDE, MAX_RECENTRED_SIDE)
    covered = float(reference.mask.mean())
    assert covered == pytest.approx(0.6**2, abs=0.01)  # the 20 % border each side
