"""Wall time of one sweep on the local executor and on Ray (a one-machine cluster, 2 CPUs).

Prints the wall time of each, the mean time inside a run, and Ray's overhead per task:
(Ray wall time x 2 slots - sum of in-run times) / number of runs.

Run: python benchmarks/batch_executors.py [--prompts 4] [--steps 300] [--generator nerf]   (needs sds-cli[ray])
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness

SHAPES = ["a red cube", "a blue sphere", "a green cone", "a yellow torus", "a red cylinder", "a blue cube"]


def sweep(
    out: Path, prompts: Path, steps: int, generator: str, extra: list[str], env: dict[str, str]
) -> tuple[float, list[dict]]:
    cmd = [sys.executable, "-m", "sds_cli.app", "batch", str(prompts), "--out", str(out), "--steps", str(steps)]
    cmd += ["--generator", generator, "--guidance", "shapes", "--preset", "draft", "--device", "cpu", *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    wall = time.perf_counter() - start
    return wall, json.loads((out / "batch.json").read_text())["runs"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--generator", default="nerf", help="nerf (default) or image (tiny runs: overhead only)")
    harness.add_outputs(parser)
    args = parser.parse_args(argv)
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if ray_cli is None:
        sys.exit('Ray is not installed: pip install "sds-cli[ray]"')
    work = Path(tempfile.mkdtemp(prefix="sds-bench-"))
    prompts = work / "prompts.txt"
    prompts.write_text("\n".join(SHAPES[: args.prompts]) + "\n")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env["RAY_AUTH_MODE"] = "token"
    # the local executor runs one run at a time with both cores; each Ray task gets one core
    local_wall, local_runs = sweep(work / "local", prompts, args.steps, args.generator, [], env)
    start = [ray_cli, "start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1", "--port", "46379"]
    subprocess.run([*start, "--include-dashboard", "false"], check=True, env=env, capture_output=True)
    try:
        ray = ["--executor", "ray", "--address", "127.0.0.1:46379"]
        ray_wall, ray_runs = sweep(work / "ray", prompts, args.steps, args.generator, ray, env)
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True)
    n = len(ray_runs)
    inside_local = sum(r["seconds"] for r in local_runs)
    inside_ray = sum(r["seconds"] for r in ray_runs)
    print(f"sweep: {n} shapes prompts x {args.steps} steps, {args.generator} generator, draft preset, CPU")
    print(f"local executor: wall {local_wall:7.1f} s   mean in-run {inside_local / n:6.1f} s")
    print(
        f"ray, 2 CPUs:    wall {ray_wall:7.1f} s   mean in-run {inside_ray / n:6.1f} s   "
        f"speed-up {local_wall / ray_wall:.2f}x"
    )
    print(
        f"ray overhead per task: {(ray_wall * 2 - inside_ray) / n:.2f} s "
        "(wall x 2 slots - in-run time, per run; includes Ray start-up and worker imports)"
    )
    row = {"runs": n, "steps": args.steps, "generator": args.generator, "local_wall_s": local_wall}
    row |= {"local_in_run_s": inside_local / n, "ray_wall_s": ray_wall, "ray_in_run_s": inside_ray / n}
    row["ray_overhead_per_task_s"] = (ray_wall * 2 - inside_ray) / n
    harness.write_outputs(args, [row], "cpu", __file__, argv)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
