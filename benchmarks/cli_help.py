"""How long `sds --help` and `sds plugins` take, as a user sees it (target: <= 1.0 s).

Run: python benchmarks/cli_help.py [--repeats N]   (with the packages installed)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test loads this file
import harness


def time_command(cmd: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    harness.add_outputs(parser)
    args = parser.parse_args(argv)
    rows = []
    sds = shutil.which("sds")
    base = [sds] if sds else [sys.executable, "-m", "sds_cli.app"]
    print(f"command: {' '.join(base)}  (median, min, max over {args.repeats} runs, after one warm-up)")
    for extra in (["--help"], ["plugins"], ["plugins", "--json"]):
        time_command(base + extra, 1)
        times = time_command(base + extra, args.repeats)
        median = statistics.median(times)
        verdict = "ok" if median <= 1.0 else "OVER 1.0 s"
        rows.append({"command": ["sds", *extra], "median_s": median, "min_s": min(times), "max_s": max(times)})
        print(f"sds {' '.join(extra):<16} median {median:.3f} s  min {min(times):.3f}  max {max(times):.3f}  {verdict}")
    harness.write_outputs(args, rows, "cpu", __file__, argv)


if __name__ == "__main__":
    main()
