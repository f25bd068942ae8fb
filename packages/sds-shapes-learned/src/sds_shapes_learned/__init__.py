"""sds-shapes-learned: the learned priors `shapes-learned` (DeepFloyd IF stage-I format),
`shapes-learned-sd` (Stable Diffusion 1.x format), `shapes-learned-flow` (Stable Diffusion 3 format)
and `shapes-zero123` (Zero-1-to-3 format, image to 3D), trained on renders of the sds-shapes world.

plugin.py (the registrations, run by sds-guidance's backends) · config.py (training options) ·
data.py (renders, captions and pairs of views) · model.py (the IF-format parts: T5 tokenizer and
encoder, UNet, scheduler, and the pipeline folder) · sd_model.py, sd3_model.py, zero123_model.py
and vae.py (the SD, SD3 and Zero-1-to-3 format parts and their autoencoder stage) · losses.py (the
hybrid loss of learned variance) · card.py (the model card) · train.py (the seeded, resumable
training loop; `python -m sds_shapes_learned`). Training needs the `train` extra (rich); the
shipped weights live in `sds_shapes_learned/models/`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sds-shapes-learned")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
