"""The formats of final/, from `sds_core.api.EXPORT_FORMATS`: which are meshes, videos, the viewer,
and the formats an export asked for."""

from __future__ import annotations

from collections.abc import Sequence

from sds_core.api import EXPORT_FORMATS, ConfigError, ExportContext

VIEWER_FORMAT = "html"  # index.html
VIDEO_FORMATS: tuple[str, ...] = ("mp4", "gif")  # turntable.*
MESH_FORMATS: tuple[str, ...] = tuple(f for f in EXPORT_FORMATS if f not in (*VIDEO_FORMATS, VIEWER_FORMAT))


def requested_formats(context: ExportContext, default: Sequence[str]) -> tuple[str, ...]:
    """The formats `sds export --format` asked for (else `default`); an unknown one is a user error."""
    formats = tuple(context.formats) if context.formats else tuple(default)
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ConfigError(f"unknown export format(s) {unknown}; accepted: {', '.join(EXPORT_FORMATS)}")
    return formats


def wants_mesh(formats: Sequence[str]) -> bool:
    """A mesh file or the viewer (which embeds the GLB) is asked for."""
    return any(f in formats for f in (*MESH_FORMATS, VIEWER_FORMAT))


def wants_viewer(formats: Sequence[str]) -> bool:
    """index.html is written for the viewer and along with a GLB."""
    return VIEWER_FORMAT in formats or "glb" in formats


def wants_turntable(formats: Sequence[str]) -> bool:
    """Turntable frames are rendered for the videos and for the viewer (its fallback)."""
    return any(f in formats for f in VIDEO_FORMATS) or wants_viewer(formats)
