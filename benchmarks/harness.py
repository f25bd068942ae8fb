"""What the benchmark scripts share: their common options, and their output (rows, stored results).

A script adds the options it takes (`add_common_options`, or the single `add_*` helpers), reads
the config overrides as `sds generate --set` does (`overrides`), and ends with `write_outputs`:
`--json PATH` writes the rows alone (as the scripts always did), `--record PATH` a stored result
in the format of `sds bench --json` (sds_cli.bench.record: command, date, commit, machine,
python, torch, cuda, driver, device, rows), written atomically.

The scripts run as `python benchmarks/X.py`, so this module is imported as plain `harness`.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SET_HELP = "key.path=value, as sds generate --set"


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose help is the script's docstring, laid out as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_objects(p: argparse.ArgumentParser, default: Sequence[str], nargs: str = "+") -> None:
    p.add_argument("--objects", nargs=nargs, default=list(default))


def add_preset_steps(p: argparse.ArgumentParser, preset: str | None = "draft", steps_help: str | None = None) -> None:
    """--preset (when `preset` is given, its default) and --steps (the run's length, default: the preset's)."""
    if preset is not None:
        p.add_argument("--preset", default=preset)
    p.add_argument("--steps", type=int, default=None, help=steps_help)


def add_seed(p: argparse.ArgumentParser, default: int = 0) -> None:
    p.add_argument("--seed", type=int, default=default)


def add_seeds(p: argparse.ArgumentParser, default: Sequence[int] = (0, 1), nargs: str = "*") -> None:
    p.add_argument("--seeds", nargs=nargs, type=int, default=list(default))


def add_sets(p: argparse.ArgumentParser, help: str = SET_HELP) -> None:
    p.add_argument("--set", action="append", default=[], help=help)


def add_device(p: argparse.ArgumentParser, default: str = "cpu", help: str | None = None) -> None:
    p.add_argument("--device", default=default, help=help or f"{default} (default), cpu, cuda or auto")


def add_outputs(
    p: argparse.ArgumentParser, out: bool = False, json_help: str | None = "also write the rows as JSON"
) -> None:
    """--json PATH (the rows), --record PATH (a stored result) and, with `out`, --out (the run folders)."""
    if out:
        p.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    p.add_argument("--json", type=Path, default=None, help=json_help)
    add_record(p)


def add_record(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="PATH",
        help="write a stored result here (the format of sds bench --json: command, commit, machine, rows)",
    )


def add_common_options(
    p: argparse.ArgumentParser,
    *,
    objects: Sequence[str] | None = None,
    objects_nargs: str = "+",
    preset: str | None = "draft",
    seeds: Sequence[int] | None = None,
    device: str | None = "cpu",
    device_help: str | None = None,
) -> None:
    """The options of the shapes benchmarks, in their usual order: --objects, --preset, --steps,
    --seed (or --seeds when `seeds` is given), --set, --out, --json, --record, --device."""
    if objects is not None:
        add_objects(p, objects, objects_nargs)
    add_preset_steps(p, preset)
    if seeds is None:
        add_seed(p)
    else:
        add_seeds(p, seeds)
    add_sets(p)
    add_outputs(p, out=True)
    if device is not None:
        add_device(p, device, device_help)


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """`--set key.path=value` items as a config tree, exactly as `sds generate --set` reads them."""
    from sds_core.config import parse_sets as core_parse_sets

    return core_parse_sets(list(items))


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config overrides of `--set` (when the script has it), then `--steps` as run.steps:
    `sds generate`'s own `command_overrides`."""
    from sds_cli.options import command_overrides

    return command_overrides(None, getattr(args, "set", None), getattr(args, "steps", None), None)


def run_root(args: argparse.Namespace, prefix: str) -> Path:
    """`--out` when given (kept), else a fresh temporary folder named `prefix...`, removed when the
    process exits (run folders of a benchmark are hundreds of MB; nothing is left on the disk)."""
    out = getattr(args, "out", None)
    if out is not None:
        return Path(out)
    root = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return Path(root)


def command(script: str, argv: Sequence[str] | None = None) -> list[str]:
    """The command line a stored result names: `python benchmarks/<script> ARGS` (this process's
    arguments, or `argv` when main was called with them)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return ["python", f"benchmarks/{Path(script).name}", *args]


def record(rows: list[dict[str, Any]], device: Any, cmd: list[str] | None = None) -> dict[str, Any]:
    """A stored result (sds_cli.bench.record) of `rows` measured on `device` (a name or torch.device)."""
    from sds_cli.bench import record as bench_record

    if isinstance(device, str):
        from sds_core.loop import resolve_device  # auto, cpu, cuda, cuda:N, as sds generate --device

        device = resolve_device(device)
    return bench_record(cmd if cmd is not None else command(sys.argv[0]), device, rows)


def write_record(path: Path | str, rows: list[dict[str, Any]], device: Any, cmd: list[str] | None = None) -> Path:
    """Write the stored result of `rows` to `path` atomically (a temporary file renamed over it:
    never a partial file), as `sds bench --json` writes it. `cmd` defaults to this process's
    `python benchmarks/X.py ARGS`."""
    from sds_core.files import atomic_write

    data = (json.dumps(record(rows, device, cmd), indent=1) + "\n").encode("utf-8")
    return atomic_write(Path(path), data)


def write_rows(path: Path | str, rows: Any, indent: int = 2) -> None:
    """`--json`: the rows alone, as the scripts always wrote them."""
    Path(path).write_text(json.dumps(rows, indent=indent))


def write_outputs(
    args: argparse.Namespace, rows: list[dict[str, Any]], device: Any, script: str, argv: Sequence[str] | None = None
) -> None:
    """`--json` (the rows) and `--record` (the stored result), each when the script was asked for it."""
    if getattr(args, "json", None):
        write_rows(args.json, rows)
    if getattr(args, "record", None):
        write_record(args.record, rows, device, command(script, argv))


def load_script(name: str) -> Any:
    """Another benchmark script of this folder as a module (`load_script("nerf_shapes")`), loaded
    from its file so that it works whichever way the caller was started."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
