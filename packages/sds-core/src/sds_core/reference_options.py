"""Options of an image-conditioned run (no torch: read by `sds plugins`): the reference image's
camera, how its foreground is found, and the weights of the reference-view terms.

An image-conditioned guidance's config (sds-guidance's `zero123`) inherits them, so that they are
`guidance.*` options of the one component that takes `--image`; the loop reads them from there
(`sds_core.reference`). Sources: Zero-1-to-3 (Liu et al., ICCV 2023), DreamGaussian (Tang et al.,
ICLR 2024, its image mode `configs/image.yaml` and `process.py`), threestudio's
`configs/zero123.yaml` and `configs/stable-zero123.yaml` (recalled, not re-read in this session:
see docs/image-to-3d.md).
"""

from __future__ import annotations

from dataclasses import dataclass

#: a weight on a schedule, threestudio's `C(value, step)`: (start_step, start_value, end_value,
#: end_step), linear from start_value at start_step to end_value at end_step, constant outside
Ramp = tuple[float, float, float, float]


@dataclass
class ReferenceOptions:
    """The reference view of `--image` and its loss terms (Magic123 / DreamGaussian / threestudio)."""

    # the reference camera, in sds's convention (sds_core.cameras: z up, elevation above the
    # horizon, azimuth 0 on +x, the front). Zero-1-to-3's input views carry no pose of their own:
    # the relative camera is taken from the reference at polar 90 deg (elevation 0), and
    # DreamGaussian's image mode puts it at elevation 0, azimuth 0, radius 2, fovy 49.1 deg (the
    # field of view of Zero-1-to-3's Objaverse renders); threestudio's zero123 config uses
    # elevation 5, distance 3.8, fovy 20 instead
    reference_elevation: float = 0.0
    reference_azimuth: float = 0.0  # degrees; 0: the image shows the object's front
    reference_distance: float = 2.0  # DreamGaussian configs/image.yaml: radius 2
    reference_fov: float = 49.1  # degrees, vertical (square renders): DreamGaussian's fovy
    # an RGB image's background: the median colour of its border; a pixel is foreground when one
    # of its channels differs from it by more than this (0..1); an RGBA image's alpha is its mask
    background_tolerance: float = 0.08
    # crop the foreground and centre it with this fraction of the side as margin on each side
    # (DreamGaussian process.py: --border_ratio 0.2, recentred); 0 keeps the image as it is
    recenter_border: float = 0.2
    # the reference-view terms, added by the loop to the prior's loss: MSE of the reference
    # render's RGB with the image (on the guidance's background) and of its opacity with the mask.
    # threestudio configs/zero123.yaml (recalled, a later version): lambda_rgb [100, 500, 1000, 400],
    # lambda_mask [100, 50, 100, 400], lambda_sds 0.1; its commit 0076b2d has constant 200 / 50 with
    # lambda_sds 0.003 (read); DreamGaussian uses 10000 and 1000 with lambda_sds 1
    lambda_rgb: Ramp = (100.0, 500.0, 1000.0, 400.0)
    # the mask term's weight on the same schedule (threestudio zero123.yaml: [100, 50, 100, 400])
    lambda_mask: Ramp = (100.0, 50.0, 100.0, 400.0)
    # the weight of the prior's distillation loss on the novel views (threestudio: lambda_sds 0.1)
    lambda_sds: float = 0.1
    # render the reference view every this many steps (1: every step, as threestudio and
    # DreamGaussian do; more saves one render per skipped step)
    reference_every: int = 1
