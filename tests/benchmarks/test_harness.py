"""benchmarks/harness.py: the stored result's provenance, its atomic write, `--set` as `sds generate`
reads it; and every stored result under benchmarks/results/ keeps its provenance."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sds_cli.bench")

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
FIELDS = ("command", "commit", "date", "machine", "torch", "device", "rows")


def _harness() -> Any:
    spec = importlib.util.spec_from_file_location("harness", ROOT / "benchmarks" / "harness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["harness"] = module
    spec.loader.exec_module(module)
    return module


harness = _harness()


def _parse(argv: list[str]) -> Any:
    parser = harness.parser(__doc__)
    harness.add_common_options(parser, objects=("a red cube",))
    return parser.parse_args(argv)


def test_record_has_the_provenance_fields(tmp_path: Path) -> None:
    rows = [{"prompt": "a red cube", "iou": 0.5}]
    path = harness.write_record(tmp_path / "deep" / "r.json", rows, "cpu", ["python", "benchmarks/x.py", "--a"])
    stored = json.loads(path.read_text())
    assert all(field in stored for field in FIELDS)
    assert stored["rows"] == rows and stored["command"] == ["python", "benchmarks/x.py", "--a"]
    assert stored["device"].startswith("cpu") and stored["machine"]["cpus"] >= 1
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left beside it


def test_record_is_the_format_of_sds_bench(tmp_path: Path) -> None:
    import torch

    from sds_cli.bench import record

    ours = json.loads(harness.write_record(tmp_path / "r.json", [], torch.device("cpu"), ["c"]).read_text())
    theirs = record(["c"], torch.device("cpu"), [])
    assert list(ours) == list(theirs)
    assert {k: v for k, v in ours.items() if k != "date"} == {k: v for k, v in theirs.items() if k != "date"}


def test_command_names_the_script_and_its_arguments() -> None:
    assert harness.command("/any/where/benchmarks/nerf_shapes.py", ["--steps", "3"]) == [
        "python",
        "benchmarks/nerf_shapes.py",
        "--steps",
        "3",
    ]


def test_write_outputs_json_rows_and_record(tmp_path: Path) -> None:
    args = _parse(["--json", str(tmp_path / "rows.json"), "--record", str(tmp_path / "rec.json")])
    rows = [{"a": 1}]
    harness.write_outputs(args, rows, "cpu", "benchmarks/nerf_shapes.py", ["--steps", "3"])
    assert json.loads((tmp_path / "rows.json").read_text()) == rows  # --json: the rows only, as before
    stored = json.loads((tmp_path / "rec.json").read_text())
    assert stored["rows"] == rows and stored["command"] == ["python", "benchmarks/nerf_shapes.py", "--steps", "3"]


def test_no_partial_record_on_error(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_text('{"old": true}')
    with pytest.raises(TypeError):
        harness.write_record(target, [{"bad": object()}], "cpu", ["c"])  # not JSON: fails before any write
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_no_partial_record_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from sds_core.files import WriteFailed

    target = tmp_path / "r.json"

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(WriteFailed):  # the file is written, then fsync fails: the temporary one is removed
        harness.write_record(target, [{"a": 1}], "cpu", ["c"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["generator.hidden=64"],
        ["optim.schedule=constant", "optim.lr=5e-4", "run.steps=10"],
        ["guidance.background=[1.0, 1.0, 1.0]", 'generator.export_formats=["ply"]', "loss.guidance_scale=20"],
        ["generator.mesh_threshold=null", "cameras.width=16", "generator.blob=magic3d"],
    ],
)
@pytest.mark.parametrize("steps", [None, 300])
def test_set_is_read_as_sds_generate_reads_it(sets: list[str], steps: int | None) -> None:
    from sds_cli.options import command_overrides

    argv = [a for s in sets for a in ("--set", s)] + ([] if steps is None else ["--steps", str(steps)])
    assert harness.overrides(_parse(argv)) == command_overrides(None, sets, steps, None)
    assert harness.parse_sets(sets) == command_overrides(None, sets, None, None)


@pytest.mark.parametrize("bad", ["nokey", "=1", "a..b=1", "notasection.x=1"])
def test_bad_set_fails_as_sds_generate_fails(bad: str) -> None:
    from sds_cli.options import command_overrides
    from sds_core.errors import ConfigError

    with pytest.raises(ConfigError) as ours:
        harness.overrides(_parse(["--set", bad]))
    with pytest.raises(ConfigError) as theirs:
        command_overrides(None, [bad], None, None)
    assert str(ours.value) == str(theirs.value)


def test_common_options_and_defaults() -> None:
    args = _parse([])
    assert (args.objects, args.preset, args.steps, args.seed, args.set) == (["a red cube"], "draft", None, 0, [])
    assert (args.out, args.json, args.record, args.device) == (None, None, None, "cpu")


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_stored_results_keep_their_provenance(path: Path) -> None:
    stored = json.loads(path.read_text())
    missing = [field for field in FIELDS if field not in stored]
    assert not missing, f"{path.name} lost {missing}"
    assert isinstance(stored["command"], list) and stored["command"], path.name
    assert isinstance(stored["rows"], list) and stored["rows"], path.name
    assert isinstance(stored["machine"], dict) and stored["date"] and stored["torch"], path.name


def test_regularizer_balance_runs_and_records(tmp_path: Path) -> None:
    """The script builds its nerf run through the lifecycle and records both reductions' gradient norms."""
    pytest.importorskip("sds_nerf")
    script = harness.load_script("regularizer_balance")
    record = tmp_path / "balance.json"
    args = ["--preset", "draft", "--step", "500", "--record", str(record)]
    assert script.main(args) == 0
    rows = json.loads(record.read_text())["rows"]
    assert [r["reduction"] for r in rows] == ["mean", "sum"]
    assert all(r["sds"] > 0 and r["pixels"] == 32 * 32 for r in rows)  # the draft renders 32 x 32
