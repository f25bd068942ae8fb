"""`sds eval clip-r-precision`: R-Precision of runs against the 153 captions, per CLIP model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sds_core.api import MAX_EVAL_VIEWS, SdsError, check_image_side
from sds_eval.captions import normalize_caption, read_captions
from sds_eval.r_precision import TABLE1_DREAMFUSION, ranking_hits
from sds_eval.renders import RunRenders, render_run

MODES = ("color", "geometry")


def distractor_captions(prompts_file: Path | None) -> list[str]:
    """The raw distractor captions (the shipped 153 by default), read and checked before any run is
    rendered: a file that is missing, unreadable, not UTF-8 or empty is an SdsError."""
    if prompts_file is None:
        return read_captions(None)
    path = Path(prompts_file)
    if not path.is_file():
        raise SdsError(f"prompts file {path} does not exist (or is not a regular file)")
    try:
        captions = read_captions(path)
    except UnicodeDecodeError as exc:
        raise SdsError(f"prompts file {path} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    except OSError as exc:
        raise SdsError(f"prompts file {path} cannot be read: {exc.strerror or exc}") from None
    if not captions:
        raise SdsError(f"prompts file {path} holds no captions (one a line)")
    return captions


def caption_set(
    prompts_file: Path | None, run_prompts: list[str], distractors: list[str] | None = None
) -> tuple[list[str], dict[str, int]]:
    """Normalised distractor captions (`distractors`, else read from `prompts_file`), extended by any
    run prompt not among them, and each prompt's index."""
    raw = distractors if distractors is not None else distractor_captions(prompts_file)
    captions = [normalize_caption(c) for c in raw]
    index = {c: i for i, c in enumerate(captions)}
    for prompt in run_prompts:
        key = normalize_caption(prompt)
        if key not in index:
            index[key] = len(captions)
            captions.append(key)
    return captions, {p: index[normalize_caption(p)] for p in run_prompts}


def check_render_options(views: int, resolution: int) -> None:
    """The number and side of the evaluation renders within `sds_core.limits`, else an SdsError."""
    if isinstance(views, bool) or not isinstance(views, int) or not 1 <= views <= MAX_EVAL_VIEWS:
        raise SdsError(f"--views must be a whole number from 1 to {MAX_EVAL_VIEWS}, not {views!r}")
    check_image_side(resolution, "--resolution", other=resolution, purpose="one float32 RGB render")


def clip_r_precision(
    run_dirs: list[Path],
    clip_models: list[str],
    views: int = 8,
    prompts_file: Path | None = None,
    resolution: int = 128,
    device: str = "auto",
    renders: list[RunRenders] | None = None,
    allow_pickled_weights: bool = False,
) -> dict[str, Any]:
    """Render every run once, score with every CLIP model; returns the JSON-ready report. The
    options and the prompts file are checked before anything is rendered.
    allow_pickled_weights: accept CLIP folders that hold only pickled `.bin` weights."""
    from sds_core.api import resolve_device
    from sds_eval.clip_model import ClipScorer

    check_render_options(views, resolution)
    distractors = distractor_captions(prompts_file)  # before the rendering: a bad file fails at once
    renders = renders or [render_run(d, views=views, resolution=resolution, device=device) for d in run_dirs]
    captions, true_index = caption_set(prompts_file, [r.prompt for r in renders], distractors)
    report: dict[str, Any] = {
        "captions": len(captions),
        "views": views,
        "runs": [{"run": str(r.run_dir), "prompt": r.prompt, "r_precision": {}} for r in renders],
        "r_precision": {},
        "table1_dreamfusion": {m: TABLE1_DREAMFUSION[m] for m in clip_models if m in TABLE1_DREAMFUSION},
    }
    for model in clip_models:
        scorer = ClipScorer(model, resolve_device(device), allow_pickled_weights=allow_pickled_weights)
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
