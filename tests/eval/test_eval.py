"""Evaluation: R-Precision against a known ranking, captions, and a tiny CLIP end to end offline."""

from __future__ import annotations

import hashlib
from importlib.resources import files

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("sds_eval")

from sds_eval.captions import CAPTIONS_SHA256, normalize_caption, read_captions
from sds_eval.evaluate import caption_set, clip_r_precision
from sds_eval.r_precision import r_precision, ranking_hits


def test_oracle_ranking_gives_the_exact_r_precision() -> None:
    # Orthonormal caption embeddings; each view's image embedding points at a chosen caption.
    captions = torch.eye(10)
    chosen = torch.tensor([3, 3, 7, 3, 0, 3, 3, 9])  # the true caption is 3: 5 of 8 views rank it first
    images = captions[chosen] * 2.0 + 0.01 * torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    assert ranking_hits(images, captions, 3).tolist() == (chosen == 3).tolist()
    assert r_precision(images, captions, 3) == 5 / 8
    assert r_precision(images, captions, 7) == 1 / 8


def test_shipped_captions_are_the_153_of_dream_fields() -> None:
    captions = read_captions()
    assert len(captions) == 153
    raw = files("sds_eval").joinpath("data", "dreamfields_coco_val_153.txt").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == CAPTIONS_SHA256
    assert captions[0] == "A blue bicycle parked by a metal gate."


def test_normalisation_follows_dream_fields() -> None:
    assert normalize_caption("A blue bicycle parked by a metal gate.") == "a blue bicycle parked by a metal gate."
    assert normalize_caption(" an orange bike leaning on a pole in the snow ") == (
        "an orange bike leaning on a pole in the snow."
    )
    assert normalize_caption("Two dogs, ...") == "two dogs."


def test_run_prompts_outside_the_set_are_appended() -> None:
    captions, index = caption_set(None, ["A blue bicycle parked by a metal gate", "a red cube"])
    assert len(captions) == 154
    assert index == {"A blue bicycle parked by a metal gate": 0, "a red cube": 153}


def _tiny_clip(folder) -> None:
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())  # the 256 byte-level characters CLIP's BPE starts from
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 128,
            "projection_dim": 16,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": 16,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def test_tiny_clip_scores_a_real_run_offline(tmp_path, catalog) -> None:
    from sds_core.loop import start_run

    clip_dir = tmp_path / "tiny-clip"
    _tiny_clip(clip_dir)
    run_dir = tmp_path / "run"
    names = {"generator": "image", "guidance": "target"}
    start_run(
        "A blue bicycle parked by a metal gate.", run_dir, "draft", {"run": {"steps": 3}}, names, "cpu", [], catalog
    ).run()
    from sds_eval.renders import render_run

    import sds_core.loop as loop

    original = loop.load_catalog
    loop.load_catalog = lambda: catalog  # the test guidance is not installed as an entry point
    try:
        renders = [render_run(run_dir, views=4, resolution=16, device="cpu")]
    finally:
        loop.load_catalog = original
    report = clip_r_precision([run_dir], [str(clip_dir)], views=4, device="cpu", renders=renders)
    assert report["captions"] == 153 and report["views"] == 4
    score = report["runs"][0]["r_precision"][str(clip_dir)]
    assert 0.0 <= score["color"] <= 1.0 and score["geometry"] is None  # a 2D image has no textureless view
    assert report["r_precision"][str(clip_dir)]["color"] == score["color"]


def test_missing_clip_weights_offline_is_one_sentence() -> None:
    from sds_eval.clip_model import ClipScorer

    from sds_core.errors import SdsError

    with pytest.raises(SdsError, match=r"CLIP model 'openai/clip-vit-base-patch32' is not available: .*--clip PATH"):
        ClipScorer("openai/clip-vit-base-patch32")
