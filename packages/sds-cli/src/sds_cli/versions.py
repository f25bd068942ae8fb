"""`sds --version`: the installed versions of the sds packages. Imports no torch and loads no plugin."""

from __future__ import annotations

import re
from importlib.metadata import distributions

ENTRY_POINT_GROUP = "sds"  # sds_core.plugins.ENTRY_POINT_GROUP, without importing sds-core


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions() -> list[tuple[str, str]]:
    """(distribution, version) of every installed `sds-*` distribution and of every other
    distribution that provides a plugin (an entry point of group `sds`), sorted by name."""
    found: dict[str, tuple[str, str]] = {}
    for dist in distributions():
        name = dist.metadata["Name"] or ""
        plugin = any(ep.group == ENTRY_POINT_GROUP for ep in dist.entry_points)
        if name and (_normal(name).startswith("sds-") or plugin):
            found.setdefault(_normal(name), (name, dist.version))
    return [found[key] for key in sorted(found)]


def version_lines() -> list[str]:
    """One "name version" line per installed sds package."""
    return [f"{name} {version}" for name, version in installed_versions()]
