"""The plugin manager: entry points, built-ins, duplicates, broken plugins, blocking."""

from __future__ import annotations

import pytest

from sds_core.errors import PluginError
from sds_core.plugins import load_catalog

THROWAWAY = """
from dataclasses import dataclass
from sds_core.hookspecs import hookimpl
from sds_core.plugins import PluginSpec

@dataclass
class VoxelConfig:
    size: int = 16

@hookimpl
def sds_register_generators(registry):
    registry.add(PluginSpec("voxels", "throwaway_voxels:nothing", VoxelConfig, "A throwaway voxel generator."))
"""

DUPLICATE_IMAGE = """
from dataclasses import dataclass
from sds_core.hookspecs import hookimpl
from sds_core.plugins import PluginSpec

@dataclass
class C:
    pass

@hookimpl
def sds_register_generators(registry):
    registry.add(PluginSpec("image", "x:y", C, "Another image generator."))
"""


def test_entry_point_plugin_is_listed_with_its_package(install_entry_point) -> None:
    install_entry_point("throwaway-voxels", "throwaway_voxels", THROWAWAY)
    catalog = load_catalog()
    spec = catalog.get("generator", "voxels")
    assert spec.provider == "throwaway-voxels"
    assert spec.version == "0.1.0"
    assert spec.description == "A throwaway voxel generator."
    assert "image" in catalog.registry("generator")  # built-ins still there
    assert catalog.get("loss", "sds").provider == "sds-core"


def test_duplicate_name_names_both_providers(install_entry_point) -> None:
    install_entry_point("evil-images", "evil_images", DUPLICATE_IMAGE)
    with pytest.raises(PluginError) as info:
        load_catalog()
    message = str(info.value)
    assert "'image'" in message and "sds-core" in message and "evil-images" in message


def test_blocking_the_duplicate_lets_the_rest_load(install_entry_point) -> None:
    install_entry_point("evil-images", "evil_images", DUPLICATE_IMAGE, entry_name="evil")
    catalog = load_catalog(environ={"SDS_BLOCK_PLUGINS": "evil"})
    assert catalog.get("generator", "image").provider == "sds-core"


def test_broken_plugin_is_reported_and_others_load(install_entry_point) -> None:
    install_entry_point("broken-plugin", "broken_plugin", "raise ImportError('needs libfoo')\n")
    install_entry_point("throwaway-voxels", "throwaway_voxels", THROWAWAY)
    catalog = load_catalog()
    assert [(f.name, f.provider) for f in catalog.failures] == [("broken-plugin", "broken-plugin")]
    assert "needs libfoo" in catalog.failures[0].error
    assert "voxels" in catalog.registry("generator")


def test_unknown_name_lists_the_available_ones(catalog) -> None:
    with pytest.raises(PluginError, match=r"unknown guidance 'no-such-backend'; available: .*target"):
        catalog.get("guidance", "no-such-backend")


def test_plugin_manager_rejects_unknown_hooks(install_entry_point) -> None:
    code = "from sds_core.hookspecs import hookimpl\n@hookimpl\ndef sds_register_widgets(registry):\n    pass\n"
    install_entry_point("odd-plugin", "odd_plugin", code)
    with pytest.raises(PluginError, match="unknown hook"):
        load_catalog()


def test_a_factory_result_is_checked_against_its_protocol(catalog) -> None:
    class Incomplete:
        """Renders, but has no regularizers, param_groups, preview, export..."""

        view_dependent = False

        def __init__(self, config: object, context: object) -> None:
            pass

        def render(self, cameras: object, step: int) -> None:
            return None

    from sds_core.plugins import PluginError, PluginSpec, Registry

    registry = Registry("generator")
    registry.add(PluginSpec("half", Incomplete, object, "half a generator", provider="tests"))
    with pytest.raises(PluginError) as info:
        registry.get("half").build(None, None)
    message = str(info.value)
    assert message.startswith("generator 'half' from tests built a Incomplete that lacks ")
    assert "export" in message and "param_groups" in message and "render" not in message.split("lacks")[1]
