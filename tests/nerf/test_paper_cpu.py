"""The `paper-cpu` preset is the `paper` preset resized: the same components, A.2's cameras."""

from __future__ import annotations

from typing import Any

from sds_core.config import CameraConfig, config_to_dict
from sds_core.plugins import load_catalog
from sds_core.resolve import resolve_config

NAMES = {"generator": "nerf", "guidance": "shapes"}
# what paper-cpu may change: resolution, samples, steps (and the schedules counted in steps),
# learning rate, the initial density shift (a deviation in both) and the size of the exports
SIZES = {
    "cameras.width",
    "cameras.height",
    "guidance.resolution",
    "generator.samples_per_ray",
    "generator.occupancy_resolution",
    "generator.occupancy_update_every",
    "generator.occupancy_warmup",
    "generator.density_bias",
    "generator.albedo_only_steps",
    "generator.ipe_anneal_steps",
    "generator.orientation_anneal_steps",
    "generator.mesh_resolution",
    "generator.texture_size",
    "generator.video_frames",
    "generator.video_resolution",
    "optim.lr",
    "optim.warmup_steps",
    "run.steps",
    "run.preview_every",
    "run.checkpoint_every",
}


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_paper_cpu_differs_from_paper_in_sizes_only_and_keeps_a2_cameras() -> None:
    catalog = load_catalog()
    paper = resolve_config(catalog, "paper", names=NAMES)
    cpu = resolve_config(catalog, "paper-cpu", names=NAMES)
    a, b = flat(paper.tree), flat(cpu.tree)
    assert a.keys() == b.keys()
    changed = {key for key in a if a[key] != b[key]}
    assert changed <= SIZES, sorted(changed - SIZES)
    assert {"run.steps", "cameras.width", "generator.samples_per_ray"} <= changed
    gen = cpu.plugin_configs["generator"]
    # the paper's components (A.2): the MLP on IPE, autograd normals, the regularisers, no entropy
    assert (gen.field, gen.encoding, gen.hidden, gen.blocks) == ("mlp", "ipe", 128, 5)
    assert gen.normals == "autograd" and gen.orientation_on_albedo and gen.entropy_weight == 0.0
    assert gen.opacity_weight == 1e-3 and gen.orientation_weight_end == 1e-2
    assert gen.background == "auto" and (gen.shaded_probability, gen.textureless_probability) == (0.75, 0.5)
    assert cpu.optim.schedule == "warmup_cosine"
    # the schedules keep the paper's fractions of the run (A.2: 1k, 5k, 3k of 15k steps)
    steps = cpu.run.steps
    assert gen.albedo_only_steps / steps == paper.plugin_configs["generator"].albedo_only_steps / paper.run.steps
    assert gen.ipe_anneal_steps / steps == paper.plugin_configs["generator"].ipe_anneal_steps / paper.run.steps
    assert cpu.optim.warmup_steps / steps == paper.optim.warmup_steps / paper.run.steps
    # A.2's camera distribution, only the image size changed; the prior renders at that size
    cameras = config_to_dict(cpu.cameras)
    a2 = config_to_dict(CameraConfig())
    assert {k: v for k, v in cameras.items() if k not in ("width", "height")} == {
        k: v for k, v in a2.items() if k not in ("width", "height")
    }
    assert cpu.plugin_configs["guidance"].references == "camera"
    assert cpu.plugin_configs["guidance"].resolution == cpu.cameras.width == cpu.cameras.height < 64
