"""sds-mesh: an explicit triangle mesh as an SDS generator (the `mesh` plugin)."""

from __future__ import annotations

__version__ = "0.1.0"
