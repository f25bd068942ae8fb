"""Generators shipped with sds-core."""
