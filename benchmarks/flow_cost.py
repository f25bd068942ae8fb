"""The prior's cost of a FLUX.1-dev SDS step, guidance-distilled against true classifier-free guidance.

FLUX.1-dev takes its guidance scale as an input (`guidance_embeds`), so `guidance.cfg_mode=distilled`
(FluxPipeline's default) makes one transformer call per prediction, at the batch of the renders;
`guidance.cfg_mode=true-cfg` adds the negative prompt's branch (FluxPipeline's true CFG): one call at
twice the batch. Measured on the tiny FLUX.1-dev of the tests (tests/guidance/flow_models.py: the
published architecture with widths and depths shrunk, random weights), loaded by the `flux`
backend from a saved folder, on the CPU in float32: the `predict_noise` call alone and the whole
SDS gradient (noising, prediction, RFDS's w(t)(v_hat - (eps - x))), each the median of --repeats
after --warmup. The tiny model's ratio is the shape of the saving, not the published model's
figure (its attention over 512 text tokens dominates differently).

    OMP_NUM_THREADS=1 python benchmarks/flow_cost.py
    OMP_NUM_THREADS=1 python benchmarks/flow_cost.py --sides 64 128 --repeats 50 \
        --record benchmarks/results/flow_cost-cpu-tiny.json
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.guidance.flow_models: the tiny FLUX
import harness

MODES = ("distilled", "true-cfg")


def _median_ms(fn: Any, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(folder: Path, side: int, mode: str, batch: int, repeats: int, warmup: int) -> dict[str, Any]:
    """One row: the transformer calls and batch per prediction, predict_noise's and the SDS gradient's ms."""
    import torch

    from sds_core.losses.sds import SDSLoss
    from sds_core.losses.sds_config import SDSConfig
    from sds_core.protocols import BuildContext, Render
    from sds_guidance.config import FluxConfig
    from sds_guidance.flux import FluxGuidance

    context = BuildContext(device=torch.device("cpu"), prompt="a red cube", total_steps=10)
    config = FluxConfig(model=str(folder), resolution=side, cfg_mode=mode, embedding_cache=False, view_prompts=False)
    guidance = FluxGuidance(config, context)
    calls: list[int] = []
    guidance.transformer.register_forward_hook(
        lambda module, args, kwargs, out: calls.append(kwargs["hidden_states"].shape[0]), with_kwargs=True
    )
    x = torch.randn(batch, guidance.channels, guidance.latent_resolution, guidance.latent_resolution)
    conditioning = guidance.condition(Render(image=x, space="latent"), None)
    t = torch.full((batch,), 500)
    loss = SDSLoss(SDSConfig(guidance_scale=6.0), BuildContext(**{**context.__dict__, "guidance": guidance}))
    noise = torch.randn_like(x)
    with torch.no_grad():
        predict = _median_ms(lambda: guidance.predict_noise(x, t, conditioning), repeats, warmup)
        calls.clear()
        guidance.predict_noise(x, t, conditioning)
        per_prediction = list(calls)
        sds = _median_ms(lambda: loss.gradient(x, guidance, conditioning, t, noise), repeats, warmup)
    row = {
        "model": "FLUX.1-dev (tiny)",
        "cfg_mode": mode,
        "side_px": side,
        "tokens": (guidance.latent_resolution // 2) ** 2,
        "batch": batch,
        "transformer_calls": len(per_prediction),
        "transformer_batch": per_prediction[0],
        "predict_ms": round(predict, 3),
        "sds_gradient_ms": round(sds, 3),
        "device": "cpu",
        "dtype": "float32",
    }
    print(
        f"{row['model']:<18} {mode:<9} {side:>4} px  calls {row['transformer_calls']} x batch "
        f"{row['transformer_batch']}  predict {predict:8.2f} ms  SDS gradient {sds:8.2f} ms"
    )
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = harness.parser(__doc__)
    p.add_argument("--sides", nargs="+", type=int, default=[64, 128], help="render sides in pixels (multiples of 16)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    harness.add_outputs(p)
    args = p.parse_args(argv)
    import torch
    from tests.guidance.flow_models import build

    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sds-flow-cost-") as tmp:
        folder = build("flux1-dev", Path(tmp) / "flux1-dev")
        for side in args.sides:
            pair = [measure(folder, side, mode, args.batch, args.repeats, args.warmup) for mode in MODES]
            ratio = pair[1]["predict_ms"] / pair[0]["predict_ms"]
            for row in pair:
                row["true_cfg_over_distilled_predict"] = round(ratio, 3)
            print(f"{'':<18} true CFG / distilled prediction at {side} px: {ratio:.2f}x")
            rows += pair
    harness.write_outputs(args, rows, "cpu", __file__, argv)
    return rows


if __name__ == "__main__":
    main()
