"""`sds eval clip-r-precision`: R-Precision of runs against the 153 captions, per CLIP model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sds_eval.captions import normalize_caption, read_captions
from sds_eval.r_precision import TABLE1_DREAMFUSION, ranking_hits
from sds_eval.renders import RunRenders, render_run

MODES = ("color", "geometry")


def caption_set(prompts_file: Path | None, run_prompts: list[str]) -> tuple[list[str], dict[str, int]]:
    """Normalised distractor captions, extended by any run prompt not among them, and each prompt's index."""
    captions = [normalize_caption(c) for c in read_captions(prompts_file)]
    index = {c: i for i, c in enumerate(captions)}
    for prompt in run_prompts:
        key = normalize_caption(prompt)
        if key not in index:
            index[key] = len(captions)
            captions.append(key)
    return captions, {p: index[normalize_caption(p)] for p in run_prompts}


def clip_r_precision(
    run_dirs: list[Path],
    clip_models: list[str],
    views: int = 8,
    prompts_file: Path | None = None,
    resolution: int = 128,
    device: str = "auto",
    renders: list[RunRenders] | None = None,
) -> dict[str, Any]:
    """Render every run once, score with every CLIP model; returns the JSON-ready report."""
    from sds_core.loop import resolve_device
    from sds_eval.clip_model import ClipScorer

    renders = renders or [render_run(d, views=views, resolution=resolution, device=device) for d in run_dirs]
    captions, true_index = caption_set(prompts_file, [r.prompt for r in renders])
    report: dict[str, Any] = {
        "captions": len(captions),
        "views": views,
        "runs": [{"run": str(r.run_dir), "prompt": r.prompt, "r_precision": {}} for r in renders],
        "r_precision": {},
        "table1_dreamfusion": {m: TABLE1_DREAMFUSION[m] for m in clip_models if m in TABLE1_DREAMFUSION},
    }
    for model in clip_models:
        scorer = ClipScorer(model, resolve_device(device))
        texts = scorer.embed_texts(captions)
        totals = {mode: [0, 0] for mode in MODES}
        for entry, run in zip(report["runs"], renders, strict=True):
            scores: dict[str, float | None] = {}
            for mode in MODES:
                images = run.color if mode == "color" else run.geometry
                if images is None:
                    scores[mode] = None
                    continue
                hits = ranking_hits(scorer.embed_images(images), texts, true_index[run.prompt])
                scores[mode] = float(hits.float().mean())
                totals[mode][0] += int(hits.sum())
                totals[mode][1] += int(hits.numel())
            entry["r_precision"][model] = scores
        report["r_precision"][model] = {m: (h / n if n else None) for m, (h, n) in totals.items()}
    return report
