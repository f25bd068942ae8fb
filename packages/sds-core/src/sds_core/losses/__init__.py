"""Distillation losses: one module per loss."""
