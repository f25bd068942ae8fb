"""Upper bounds on every size that drives an allocation, and the memory a refused size would need.

A size given on the command line, in a config file or recorded in a run folder (which may sit on a
shared disk, written by someone else) is checked here before anything is allocated, so that
`--resolution 100000` is one sentence with an estimate instead of a multi-petabyte allocation or
a traceback. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sds_core.errors import ConfigError

# Marching-cubes grids of `sds export` (--resolution, generator.mesh_resolution) and the training
# grids of a generator: 1024 nodes per side is a 4 GiB float32 grid, which a workstation holds,
# and finer than any field here carries detail (the hash grid's finest level is 1024, DreamFusion's
# renders are 64 px); 2048 would be 32 GiB for the grid alone.
MAX_GRID_SIDE = 1024
# The IoU grid of `sds eval geometry`: 512 per side is about 4 GiB of points, turned copies and
# values, with cells of 2.3 mm on the shapes world's 1.2-unit box (the default, 64, is 19 mm);
# the yaw search evaluates the grid 90 times, which at 512 already takes hours on a CPU.
MAX_EVAL_GRID_SIDE = 512
# Views of `sds eval clip-r-precision`: one per degree of azimuth (DreamFusion §4 renders a few).
MAX_EVAL_VIEWS = 360
# Render sides (cameras.width / height, guidance.resolution, turntable and evaluation renders):
# 4096 px is four times the largest side a published prior works at (SDXL's 1024; DreamFusion
# trains at 64) and about 200 MiB for one float32 RGB image, before any network sees it.
MAX_IMAGE_SIDE = 4096
# The baked UV texture of mesh.glb / mesh.obj: 8192 is the largest texture real-time engines and
# Blender's exporters commonly take (about 2.5 GiB while baking).
MAX_TEXTURE_SIDE = 8192
# Cameras a step renders and guides (cameras.batch_size): A.2 trains at 4, one view per TPU chip,
# and MVDream at 4 views of each object; 256 is 64 times A.2's, and a step's renders, activations
# and guidance batch grow with it (the refusal gives the renders' memory alone).
MAX_CAMERA_BATCH = 256
# Frames of the turntable video (generator.video_frames): 3,600 is one frame per tenth of a degree
# (a minute at 60 fps); the default is 60, the drafts' 24.
MAX_VIDEO_FRAMES = 3600
# Latent channels a recorded guidance may declare (SD: 4, IF: 3, SD3 and FLUX: 16).
MAX_CHANNELS = 64
# Nesting of a config tree: a real config is section.option.[list of pairs], four levels.
MAX_CONFIG_DEPTH = 32
# Seeds: torch.manual_seed takes a signed 64-bit value, and negative seeds wrap differently in
# Python's, numpy's and torch's generators.
MIN_SEED, MAX_SEED = 0, 2**63 - 1

# bytes per grid node or pixel, the estimates below
GRID_NODE_BYTES = 4  # one float32 density per node (the grid marching cubes reads)
EVAL_NODE_BYTES = 32  # float32 points (12 B) and their meshgrid (12 B), a value and a mask per node
PIXEL_BYTES = 12  # one float32 RGB pixel
TEXEL_BYTES = 40  # triangle ids, float32 RGB and the dilation's distance transform per texel

_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def format_bytes(size: float) -> str:
    """A memory size in binary units, two significant figures: "3.6 PiB", "512 MiB"."""
    value, unit = float(size), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{int(value)} bytes"
    return f"{value:.2g} {_UNITS[unit]}" if value < 10 else f"{value:.0f} {_UNITS[unit]}"


def shown(value: Any, length: int = 60) -> str:
    """A value's repr for an error sentence, cut to `length` characters."""
    text = repr(value)
    return text if len(text) <= length else text[:length] + "..."


def _whole(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be a whole number from {low} to {high}, not {shown(value)}")
    return value


def check_grid_side(
    side: Any,
    what: str,
    maximum: int = MAX_GRID_SIDE,
    node_bytes: int = GRID_NODE_BYTES,
    purpose: str = "the marching-cubes grid",
    minimum: int = 2,
) -> int:
    """`side` (nodes per side of a side^3 grid) if it lies in [minimum, maximum], else a ConfigError
    naming `what` and the memory the grid would need."""
    side = _whole(side, what, minimum, maximum)
    if side < minimum:
        raise ConfigError(f"{what} must be at least {minimum} (grid points per side), not {side}")
    if side > maximum:
        need = format_bytes(float(side) ** 3 * node_bytes)
        raise ConfigError(f"{what} {side} would need about {need} for {purpose}; at most {maximum} is accepted")
    return side


def check_image_side(
    side: Any,
    what: str,
    maximum: int = MAX_IMAGE_SIDE,
    other: int | None = None,
    pixel_bytes: int = PIXEL_BYTES,
    purpose: str = "one float32 RGB image",
) -> int:
    """`side` (pixels; `other` is the image's other side, else square) if it lies in [1, maximum],
    else a ConfigError naming `what` and the memory one such image would need."""
    side = _whole(side, what, 1, maximum)
    if side < 1:
        raise ConfigError(f"{what} must be at least 1, not {side}")
    if side > maximum:
        pixels = float(side) * (other if other is not None and 0 < other <= maximum else side)
        need = format_bytes(pixels * pixel_bytes)
        raise ConfigError(f"{what} {side} would need about {need} for {purpose}; at most {maximum} is accepted")
    return side


def check_seed(seed: Any, what: str = "run.seed") -> int:
    """`seed` if it is a whole number in [MIN_SEED, MAX_SEED], else a ConfigError naming the range."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not MIN_SEED <= seed <= MAX_SEED:
        raise ConfigError(f"{what} must be a whole number from {MIN_SEED} to {MAX_SEED} (2^63 - 1), not {shown(seed)}")
    return seed


def _children(item: Any) -> list[Any] | None:
    if isinstance(item, Mapping):
        return list(item.values())
    if isinstance(item, (list, tuple)):
        return list(item)
    return None


def nesting_depth(value: Any, limit: int = MAX_CONFIG_DEPTH) -> int:
    """The nesting depth of a tree of mappings and lists (a scalar is 0, {} is 1), counted without
    recursion; anything deeper than `limit`, or holding itself (a YAML alias can), counts limit + 1.
    Shared nodes (YAML aliases) are measured once, so a "billion laughs" file costs its size."""
    kids = _children(value)
    if kids is None:
        return 0
    memo: dict[int, int] = {}  # id of a finished node -> its depth
    on_path = {id(value)}
    stack: list[tuple[Any, Any, int]] = [(value, iter(kids), 1)]  # node, its children left, depth so far
    while stack:
        node, rest, best = stack[-1]
        for child in rest:
            grandchildren = _children(child)
            if grandchildren is None:
                continue
            if id(child) in memo:
                best = max(best, 1 + memo[id(child)])
                continue
            if id(child) in on_path or len(stack) >= limit:
                return limit + 1
            stack[-1] = (node, rest, best)
            stack.append((child, iter(grandchildren), 1))
            on_path.add(id(child))
            break
        else:
            stack.pop()
            on_path.discard(id(node))
            memo[id(node)] = best
            if not stack:
                return best
            parent, parent_rest, parent_best = stack[-1]
            stack[-1] = (parent, parent_rest, max(parent_best, 1 + best))
    return 0  # pragma: no cover (the loop returns)


def check_depth(value: Any, what: str, limit: int = MAX_CONFIG_DEPTH) -> None:
    """A ConfigError when the tree `value` nests deeper than `limit` levels."""
    if nesting_depth(value, limit) > limit:
        raise ConfigError(f"{what} is nested deeper than {limit} levels; an sds config has a few")


# The sizes of a resolved config tree, checked for every run (config file, --set, presets, and a
# run folder's recorded config): (section, option) -> kind. Plugins name their sizes this way.
IMAGE_OPTIONS: tuple[tuple[str, str], ...] = (
    ("cameras", "width"),
    ("cameras", "height"),
    ("guidance", "resolution"),
    ("generator", "resolution"),
    ("generator", "video_resolution"),
)
TEXTURE_OPTIONS: tuple[tuple[str, str], ...] = (("generator", "texture_size"),)
# counts, each with its bound and what one of them is
COUNT_OPTIONS: dict[tuple[str, str], tuple[int, str]] = {
    ("cameras", "batch_size"): (MAX_CAMERA_BATCH, "views rendered and guided at each step"),
    ("generator", "video_frames"): (MAX_VIDEO_FRAMES, "frames of the turntable video"),
}
GRID_OPTIONS: dict[tuple[str, str], str] = {  # -> what the grid is, for the refusal
    ("generator", "mesh_resolution"): "the marching-cubes grid",
    ("generator", "grid_resolution"): "its float32 grid",
    ("generator", "occupancy_resolution"): "its float32 grid",
}


def check_count(count: Any, what: str, maximum: int, unit: str, cost: str = "") -> int:
    """`count` if it is a whole number in [1, maximum], else a ConfigError naming `what`, the bound,
    what is counted (`unit`) and, past the bound, `cost` (what that many would need)."""
    count = _whole(count, what, 1, maximum)
    if not 1 <= count <= maximum:
        why = f": {cost}" if cost and count > maximum else ""
        raise ConfigError(f"{what} must be from 1 to {maximum} ({unit}), not {count}{why}")
    return count


def check_config_sizes(tree: Mapping[str, Any]) -> None:
    """Every size of a resolved config tree (IMAGE_OPTIONS, TEXTURE_OPTIONS, COUNT_OPTIONS,
    GRID_OPTIONS) within its bound; options a plugin does not have, or leaves None (its guidance's
    own), are skipped. A camera batch past its bound also names its renders' memory."""

    def value(section: str, option: str) -> Any:
        node = tree.get(section)
        return node.get(option) if isinstance(node, Mapping) else None

    for (section, option), (maximum, unit) in COUNT_OPTIONS.items():
        count = value(section, option)
        if count is None:
            continue
        cost = ""
        if (section, option) == ("cameras", "batch_size") and isinstance(count, int) and count > maximum:
            width, height = value("cameras", "width"), value("cameras", "height")
            if isinstance(width, int) and isinstance(height, int) and 0 < width * height <= MAX_IMAGE_SIDE**2:
                need = format_bytes(float(count) * width * height * PIXEL_BYTES)
                cost = f"its {width} x {height} renders alone would need about {need}"
        check_count(count, f"{section}.{option}", maximum, unit, cost)

    for section, option in IMAGE_OPTIONS:
        side = value(section, option)
        if side is not None:
            other = value("cameras", "height" if option == "width" else "width") if section == "cameras" else None
            check_image_side(side, f"{section}.{option}", other=other if isinstance(other, int) else None)
    for section, option in TEXTURE_OPTIONS:
        side = value(section, option)
        if side is not None:
            check_image_side(
                side, f"{section}.{option}", MAX_TEXTURE_SIDE, pixel_bytes=TEXEL_BYTES, purpose="baking the texture"
            )
    for (section, option), purpose in GRID_OPTIONS.items():
        side = value(section, option)
        if side is not None:
            check_grid_side(side, f"{section}.{option}", purpose=purpose, minimum=1)
