"""`shapes-learned`: a DeepFloyd IF stage-I format diffusion model trained on renders of the shapes world.

config.py (training options) · data.py (renders and captions) · model.py (the IF-format parts:
T5 tokenizer and encoder, UNet, scheduler, and the pipeline folder) · losses.py (the hybrid loss of
learned variance) · train.py (the seeded, resumable training loop; `python -m sds_shapes.learned`).
Needs the `learned` extra (diffusers, transformers, rich); the shipped weights live in
`sds_shapes/models/shapes-learned/`.
"""
