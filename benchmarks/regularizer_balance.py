"""How strongly each NeRF regulariser pulls against SDS: parameter-gradient norm ratios.

For one training render (a fixed camera, a shaded mode, at a given step of the schedule) of a
fresh generator, the gradient of the SDS loss and of each weighted regulariser with respect to the
generator's parameters, their norms and the ratio regulariser / SDS, for each reduction of the
regularisers over rays (`generator.regularizer_reduction`: "sum" over pixels as SDS, or "mean").

    python benchmarks/regularizer_balance.py                          # paper preset, 64 x 64
    python benchmarks/regularizer_balance.py --preset draft --step 500 --mode textureless
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness


def measure(
    prompt: str, preset: str, reduction: str, step: int, mode: str, seed: int, sets: list[str]
) -> dict[str, Any]:
    import torch

    from sds_core.config import deep_merge
    from sds_core.lifecycle import start_run

    overrides = deep_merge(harness.parse_sets(sets), {"generator": {"regularizer_reduction": reduction}})
    out = harness.run_root(argparse.Namespace(), "reg-balance-")  # removed when the process exits
    names = {"generator": "nerf", "guidance": "shapes"}
    trainer = start_run(prompt, out / "run", preset, overrides, names, device="cpu")
    gen = trainer.generator
    gen.train()
    gen.field.set_step(step)
    params = [p for p in gen.parameters() if p.requires_grad]
    torch.manual_seed(seed)
    cams = trainer.cameras.sample()
    render = gen.render_views(cams, [mode] * cams.batch_size)
    x = trainer.guidance.prepare(render)
    cond = trainer.guidance.condition(render, cams)
    sds = trainer.loss(x, trainer.guidance, cond, step, cameras=cams).loss
    regs = gen.regularizers(render, cams, step)

    def norm(value: Any) -> float:
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))

    sds_norm = norm(sds)
    row = {"reduction": reduction, "pixels": cams.width * cams.height, "sds": sds_norm}
    for name, value in regs.items():
        if value.requires_grad:
            row[name] = norm(value)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--prompt", default="a red cube")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--step", type=int, default=3000, help="where in the schedule (weights, IPE)")
    parser.add_argument("--mode", default="lambertian", help="the render's shading mode")
    harness.add_seed(parser)
    parser.add_argument("--reductions", nargs="+", default=["mean", "sum"])
    harness.add_sets(parser)
    harness.add_outputs(parser)
    args = parser.parse_args(argv)
    harness.parse_sets(args.set)  # a bad --set fails before any run starts
    rows = []
    for reduction in args.reductions:
        row = measure(args.prompt, args.preset, reduction, args.step, args.mode, args.seed, args.set)
        rows.append(row)
        terms = [k for k in row if k not in ("reduction", "pixels", "sds")]
        ratios = " ".join(f"{k} {row[k]:.3e} (ratio {row[k] / row['sds']:.2e})" for k in terms)
        print(
            f"{args.preset} {args.prompt!r} step {args.step} {args.mode} {row['pixels']} px, reduction {reduction}: "
            f"|grad SDS| {row['sds']:.3e}; {ratios}",
            flush=True,
        )
    harness.write_outputs(args, rows, "cpu", __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
