"""The `shapes` prior: a procedural world with exact SDFs and an exact diffusion denoiser.

world.py (primitives, colours, prompts) · render.py (reference renders) · denoiser.py (the exact
empirical denoiser) · guidance.py (the Guidance) · metrics.py (IoU, Chamfer, colour error).
"""
