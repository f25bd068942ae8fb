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


# DreamFusion's Table 1 CLIP models, as the published architectures made small (tests/fixtures)
TABLE_1 = ("clip-vit-base-patch32", "clip-vit-base-patch16", "clip-vit-large-patch14")


def test_table_1_clip_architectures_score_a_real_run_offline(tmp_path, catalog, published_model) -> None:
    from sds_core.lifecycle import start_run

    clips = [str(published_model(name)) for name in TABLE_1]
    run_dir = tmp_path / "run"
    names = {"generator": "image", "guidance": "target"}
    start_run(
        "A blue bicycle parked by a metal gate.", run_dir, "draft", {"run": {"steps": 3}}, names, "cpu", [], catalog
    ).run()
    import sds_core.lifecycle as lifecycle
    from sds_eval.renders import render_run

    original = lifecycle.load_catalog
    lifecycle.load_catalog = lambda: catalog  # the test guidance is not installed as an entry point
    try:
        renders = [render_run(run_dir, views=4, resolution=16, device="cpu")]
    finally:
        lifecycle.load_catalog = original
    report = clip_r_precision([run_dir], clips, views=4, device="cpu", renders=renders)
    assert report["captions"] == 153 and report["views"] == 4
    for clip in clips:
        score = report["runs"][0]["r_precision"][clip]
        assert 0.0 <= score["color"] <= 1.0 and score["geometry"] is None  # a 2D image has no textureless view
        assert report["r_precision"][clip]["color"] == score["color"]


def test_missing_clip_weights_offline_is_one_sentence() -> None:
    from sds_core.errors import SdsError
    from sds_eval.clip_model import ClipScorer

    with pytest.raises(SdsError, match=r"CLIP model 'openai/clip-vit-base-patch32' is not available: .*--clip PATH"):
        ClipScorer("openai/clip-vit-base-patch32")
