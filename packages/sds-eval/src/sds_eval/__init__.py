"""sds-eval: CLIP R-Precision (DreamFusion Table 1) and shapes-world geometry metrics."""
