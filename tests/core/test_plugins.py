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


DERIVED = """
from sds_core.hookspecs import hookimpl

@hookimpl
def sds_register_generators(registry):
    registry.derive("fine-image", base=BASE, defaults={OPTION: 0.5}, description="The image, rougher.",
                    presets={"draft": {"run": {"steps": 7}}})
"""


def _derived(base: str = "image", option: str = "init_std") -> str:
    return DERIVED.replace("BASE", repr(base)).replace("OPTION", repr(option))


def test_a_derived_component_is_its_base_with_other_defaults(install_entry_point) -> None:
    import dataclasses

    install_entry_point("sds-derived", "derived_image", _derived())
    catalog = load_catalog()
    base, derived = catalog.get("generator", "image"), catalog.get("generator", "fine-image")
    assert derived.factory == base.factory and derived.provider == "sds-derived"
    assert derived.description == "The image, rougher." and issubclass(derived.config, base.config)
    assert derived.config().init_std == 0.5 and base.config().init_std == 0.1
    others = {f.name: getattr(base.config(), f.name) for f in dataclasses.fields(base.config) if f.name != "init_std"}
    assert all(getattr(derived.config(), k) == v for k, v in others.items())
    # the base's presets, with the derived ones merged in section by section
    assert derived.presets["draft"]["run"] == {**base.presets["draft"]["run"], "steps": 7}
    assert derived.presets["default"] == base.presets["default"]


def test_a_derived_component_names_its_missing_base_or_unknown_option(install_entry_point) -> None:
    install_entry_point("sds-orphan", "orphan", _derived(base="nope"))
    catalog = load_catalog()
    assert "fine-image" not in catalog.registry("generator")
    assert any(f.name == "fine-image" and "'nope' is not installed" in f.error for f in catalog.failures)
    install_entry_point("sds-typo", "typo", _derived(option="no_such_option"))
    with pytest.raises(PluginError, match="no_such_option"):
        load_catalog()
