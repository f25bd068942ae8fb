"""sds-shapes-learned: the learned priors `shapes-learned` (DeepFloyd IF stage-I format) and
`shapes-learned-sd` (Stable Diffusion 1.x format), trained on renders of the sds-shapes world.

plugin.py (the two registrations, run by sds-guidance's backends) · config.py (training options) ·
data.py (renders and captions) · model.py (the IF-format parts: T5 tokenizer and encoder, UNet,
scheduler, and the pipeline folder) · sd_model.py and vae.py (the SD-format parts and its
autoencoder stage) · losses.py (the hybrid loss of learned variance) · card.py (the model card) ·
train.py (the seeded, resumable training loop; `python -m sds_shapes_learned`). Training needs the
`train` extra (rich); the shipped weights live in `sds_shapes_learned/models/`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sds-shapes-learned")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
