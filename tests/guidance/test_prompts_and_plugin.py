"""Prompt processing shared by the backends, the embedding cache, and the plugin registration."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("sds_guidance")

import torch

from sds_core.plugins import load_catalog
from sds_core.prompts import per_sample_prompts, split_view
from sds_core.resolve import resolve_config
from sds_guidance.config import PromptOptions
from sds_guidance.prompt_embeddings import (
    EmbeddingCache,
    PromptEmbeddings,
    all_prompts,
    perp_neg_negatives,
)


def test_split_and_per_sample_view_prompts() -> None:
    assert split_view("a red cube, side view") == ("a red cube", "side")
    assert split_view("a red cube") == ("a red cube", None)
    views = ["front", "overhead"]
    assert per_sample_prompts("a cat", views, 2) == ["a cat, front view", "a cat, overhead view"]
    assert per_sample_prompts("a cat, back view", views, 2) == ["a cat, back view"] * 2
    assert per_sample_prompts("a cat", None, 2) == ["a cat"] * 2
    custom = "{view} view of {prompt}"
    assert per_sample_prompts("a cat", ["side", "back"], 2, custom) == ["side view of a cat", "back view of a cat"]
    assert set(all_prompts("a cat", PromptOptions(negative_prompt="blurry"))) == {
        "a cat",
        "blurry",
        *(f"a cat, {v} view" for v in ("front", "side", "back", "overhead")),
    }


def test_perp_neg_negatives_are_the_other_views() -> None:
    negatives, weights = perp_neg_negatives("a cat", ["front", "side", "back"], PromptOptions(perp_neg_weight=2.0))
    assert negatives[0] == ["a cat, side view", "a cat, front view", "a cat, front view"]
    assert negatives[1] == ["a cat, back view", "a cat, back view", "a cat, side view"]
    assert torch.equal(weights, torch.full((2, 3), 2.0))


def test_embedding_cache_is_keyed_by_model_and_prompt(tmp_path) -> None:
    pytest.importorskip("safetensors")
    calls: list[list[str]] = []

    def encode(prompts: list[str]) -> torch.Tensor:
        calls.append(list(prompts))
        return torch.stack([torch.full((3, 2), float(len(p))) for p in prompts])

    cache = EmbeddingCache(tmp_path, "model-a")
    first = cache.get(["ab", "abc"], encode)
    again = cache.get(["abc", "ab"], encode)
    assert calls == [["ab", "abc"]]
    torch.testing.assert_close(again["abc"], first["abc"])
    EmbeddingCache(tmp_path, "model-b").get(["ab"], encode)
    assert calls[-1] == ["ab"]  # another model: not shared
    options = PromptOptions(cache_dir=str(tmp_path), negative_prompt="x")
    table = PromptEmbeddings("a cat", options, encode, "model-c", torch.device("cpu"), torch.float32)
    conditioning = table.condition(2, ["back", "side"])
    assert conditioning.prompts == ["a cat, back view", "a cat, side view"]
    torch.testing.assert_close(conditioning.uncond[0], torch.full((3, 2), 1.0))


def test_catalog_lists_the_two_backends_and_presets_resolve() -> None:
    catalog = load_catalog()
    assert {"stable-diffusion", "deepfloyd-if"} <= set(catalog.registry("guidance").names())
    assert not [f for f in catalog.failures if "guidance" in f.name]
    for name in ("stable-diffusion", "deepfloyd-if"):
        assert catalog.get("guidance", name).provider == "sds-guidance"
        for preset in ("paper", "draft"):
            resolved = resolve_config(catalog, preset, names={"generator": "image", "guidance": name})
            assert resolved.specs["guidance"].name == name


def test_plugin_module_imports_no_heavy_library() -> None:
    code = (
        "import sys, sds_guidance.plugin, sds_guidance.config; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
