"""Deprecated: the trainer of `shapes-learned` moved to the package sds-shapes-learned
(`python -m sds_shapes_learned`); `python -m sds_shapes.learned` still runs it."""
