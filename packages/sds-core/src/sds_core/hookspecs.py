"""Hook specifications of the `sds` plugin host (in the style of pytest's hookspec.py).

A plugin is a module (or object) with functions marked `@hookimpl`, exposed through the
entry-point group `sds`:

    # pyproject.toml of your package
    [project.entry-points.sds]
    my-plugin = "my_package.plugin"

    # my_package/plugin.py
    from sds_core.api import PluginSpec, hookimpl

    @hookimpl
    def sds_register_generators(registry):
        registry.add(PluginSpec(name="voxels", factory="my_package.voxels:VoxelGenerator",
                                config=VoxelConfig, description="A dense voxel grid."))

pluggy passes hook arguments by keyword, so an implementation must name its argument
`registry` exactly. Keep heavy imports (torch, diffusers) out of plugin modules: factories
are imported only when a run needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from sds_core.plugins import Registry

PROJECT = "sds"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def sds_register_generators(registry: Registry) -> None:
    """Register generators (anything that renders images differentiably) with `registry.add`."""


@hookspec
def sds_register_guidance(registry: Registry) -> None:
    """Register guidance backends (frozen diffusion priors) with `registry.add`."""


@hookspec
def sds_register_losses(registry: Registry) -> None:
    """Register distillation losses (SDS and its variants) with `registry.add`."""
