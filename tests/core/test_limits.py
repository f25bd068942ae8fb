"""Bounds on sizes, nesting and seeds (sds_core.limits), where sds-core reads them: one sentence each."""

from __future__ import annotations

import json

import pytest

from sds_core.config import deep_merge, load_config_file, parse_sets
from sds_core.errors import ConfigError
from sds_core.limits import (
    MAX_CONFIG_DEPTH,
    MAX_GRID_SIDE,
    MAX_SEED,
    check_config_sizes,
    check_grid_side,
    check_image_side,
    format_bytes,
    nesting_depth,
)
from sds_core.protocols import ExportContext, GuidanceFacts
from sds_core.resolve import resolve_config

NAMES = {"generator": "image", "guidance": "target"}
FACTS = {"space": "rgb", "resolution": 64, "channels": 3, "latent_resolution": 64, "background": None}


def nested(depth: int) -> dict:
    tree: dict = {}
    for _ in range(depth - 1):
        tree = {"a": tree}
    return tree


def test_format_bytes_and_the_refusal_name_the_memory() -> None:
    assert format_bytes(100) == "100 bytes"
    assert format_bytes(512 * 2**20) == "512 MiB"
    assert format_bytes(4 * 100_000**3) == "3.6 PiB"
    with pytest.raises(ConfigError) as err:
        check_grid_side(100_000, "--resolution")
    assert str(err.value) == (
        "--resolution 100000 would need about 3.6 PiB for the marching-cubes grid; at most 1024 is accepted"
    )
    assert check_grid_side(MAX_GRID_SIDE, "--resolution") == MAX_GRID_SIDE
    with pytest.raises(ConfigError, match="at least 2"):
        check_grid_side(1, "--resolution")
    with pytest.raises(ConfigError, match="about 11 TiB for one float32 RGB image; at most 4096"):
        check_image_side(10**6, "guidance.resolution")
    with pytest.raises(ConfigError, match="whole number"):
        check_image_side("64", "guidance.resolution")


def test_nesting_depth_is_counted_without_recursion_cycles_and_aliases_included() -> None:
    values: tuple[object, ...] = (1, {}, [], {"a": [1, [2]]})
    assert [nesting_depth(v) for v in values] == [0, 1, 1, 3]
    deep: list = []
    for _ in range(100_000):  # far past Python's recursion limit
        deep = [deep]
    assert nesting_depth(deep) == MAX_CONFIG_DEPTH + 1
    loop: list = []
    loop.append(loop)  # a YAML alias can make a structure hold itself
    assert nesting_depth(loop) == MAX_CONFIG_DEPTH + 1
    laughs: list = ["lol"] * 10
    for _ in range(12):  # "billion laughs": 10^12 paths, 13 shared lists
        laughs = [laughs] * 10
    assert nesting_depth(laughs) == 13


def test_deeply_nested_config_is_one_sentence(tmp_path) -> None:
    deep_value = "[" * 5000 + "]" * 5000
    with pytest.raises(ConfigError, match="nested deeper than 32 levels"):
        parse_sets([f"generator.x={deep_value}"])  # json.loads alone raises RecursionError here
    with pytest.raises(ConfigError, match="nested deeper than 32 levels"):
        parse_sets(["generator." + ".".join(["a"] * 40) + "=1"])
    assert parse_sets(["cameras.distance_range=[1, 2]"]) == {"cameras": {"distance_range": [1, 2]}}
    path = tmp_path / "deep.json"
    path.write_text(json.dumps({"generator": nested(40)}))
    with pytest.raises(ConfigError, match=r"deep\.json is nested deeper than 32 levels"):
        load_config_file(path)
    path.write_text('{"generator": {"x": ' + deep_value + "}}")
    with pytest.raises(ConfigError, match="nested deeper than 32 levels"):
        load_config_file(path)
    with pytest.raises(ConfigError, match="nested deeper than 32 levels"):
        deep_merge(nested(40), nested(40))
    assert deep_merge({"a": {"b": 1}}, {"a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}


def test_resolve_refuses_deep_overrides_seeds_out_of_range_and_huge_sizes(catalog) -> None:
    with pytest.raises(ConfigError, match="the config is nested deeper"):
        resolve_config(catalog, "draft", {"generator": nested(40)}, NAMES)
    for seed in (-1, 2**63, 2**64 + 5):
        with pytest.raises(ConfigError, match=rf"run\.seed must be a whole number from 0 to {MAX_SEED}"):
            resolve_config(catalog, "draft", {"run": {"seed": seed}}, NAMES)
    assert resolve_config(catalog, "draft", {"run": {"seed": MAX_SEED}}, NAMES).run.seed == MAX_SEED
    with pytest.raises(ConfigError, match=r"cameras\.width 1000000 would need about .*; at most 4096"):
        resolve_config(catalog, "draft", {"cameras": {"width": 10**6}}, NAMES)
    with pytest.raises(ConfigError, match=r"generator\.resolution 100000 would need about 112 GiB"):
        resolve_config(catalog, "draft", {"generator": {"resolution": 100_000}}, NAMES)
    refusal = r"cameras\.batch_size must be from 1 to 256 \(views .*\), not 100000: .*about 1\.1 GiB"
    with pytest.raises(ConfigError, match=refusal):
        resolve_config(catalog, "draft", {"cameras": {"batch_size": 100_000, "width": 32, "height": 32}}, NAMES)
    for bad in (0, -3, 2.5, True, "4"):
        with pytest.raises(ConfigError, match=r"cameras\.batch_size must be"):
            resolve_config(catalog, "draft", {"cameras": {"batch_size": bad}}, NAMES)
    with pytest.raises(ConfigError, match=r"generator\.video_frames must be from 1 to 3600 \(frames"):
        check_config_sizes({"generator": {"video_frames": 10**9}})  # the image generator makes no video
    widest = resolve_config(catalog, "draft", {"cameras": {"batch_size": 256}}, NAMES)
    assert widest.tree["cameras"]["batch_size"] == 256


def test_recorded_guidance_facts_are_checked() -> None:
    assert GuidanceFacts.from_dict(FACTS) == GuidanceFacts("rgb", 64, 3, 64)
    assert GuidanceFacts.from_dict({**FACTS, "background": [1, 1, 1], "capabilities": ["background"]}).background
    bad = {
        "resolution": ({**FACTS, "resolution": 10**6}, "resolution 1000000 would need about 11 TiB"),
        "type": ({**FACTS, "resolution": "64"}, "resolution must be a whole number from 1 to 4096"),
        "bool": ({**FACTS, "channels": True}, "channels must be a whole number"),
        "space": ({**FACTS, "space": ["rgb"]}, "give space"),
        "missing": ({"space": "rgb"}, "lack resolution, channels, latent_resolution"),
        "background": ({**FACTS, "background": [float("nan")] * 3}, "background must be None or 1 to 4 finite"),
        "capabilities": ({**FACTS, "capabilities": [1]}, "capabilities must be a list of names"),
        "not a mapping": ("junk", "are not a mapping"),
    }
    for data, message in bad.values():
        with pytest.raises(ConfigError, match=message):
            GuidanceFacts.from_dict(data, source="last.pt")  # type: ignore[arg-type]


def test_export_context_refuses_a_huge_resolution() -> None:
    with pytest.raises(ConfigError, match=r"--resolution 100000 would need about 3\.6 PiB"):
        ExportContext(None, "a red cube", None, resolution=100_000)  # type: ignore[arg-type]
    assert ExportContext(None, "a red cube", None, resolution=256).resolution == 256  # type: ignore[arg-type]
