"""The `sds` command against a hostile user on a shared cluster (issue 33): sizes that would allocate
petabytes, terminal escapes in shared files, absurd nesting and seeds, outputs and inputs that fail
only after the work, unreadable meshes, and warnings: one sentence (or one line) each."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("typer")
import typer
from typer.testing import CliRunner

from sds_cli.app import app
from sds_cli.errors import user_errors
from sds_cli.progress import batch_table
from sds_cli.text import printable
from tests.cli.test_cli import IMAGE_RUN, TARGET_PLUGIN
from tests.cli.test_cli_safety import SHORT, generate, one_sentence

ESC = "\x1b[2J\x1b[H"  # clear the screen, cursor home


@pytest.fixture
def runner(install_entry_point) -> CliRunner:
    install_entry_point("sds-target", "sds_target_plugin", TARGET_PLUGIN, attr="plugin")
    return CliRunner()


# --- 7: sizes -------------------------------------------------------------------------------------


def test_export_resolution_is_bounded_with_the_memory_it_would_need(runner, tmp_path) -> None:
    out = tmp_path / "run"
    assert generate(runner, out).exit_code == 0
    line = one_sentence(runner.invoke(app, ["export", str(out), "--resolution", "100000"]))
    assert "--resolution 100000 would need about 3.6 PiB for the marching-cubes grid; at most 1024" in line
    assert runner.invoke(app, ["export", str(out), "--resolution", "64"]).exit_code == 0


def test_marching_cubes_grid_checks_the_resolution_it_is_given() -> None:
    """Where the grid is allocated (sds-3d): a checkpoint's recorded mesh_resolution reaches it too."""
    pytest.importorskip("sds_3d")
    from sds_3d.fields import density_grid
    from sds_core.errors import ConfigError

    calls = []

    def density(points: torch.Tensor) -> torch.Tensor:
        calls.append(len(points))
        return points.norm(dim=-1)

    with pytest.raises(ConfigError, match=r"marching-cubes resolution 100000 would need about 3\.6 PiB"):
        density_grid(density, 100_000, 1.0)
    assert calls == []
    grid = density_grid(density, 9, 1.0, chunk=100)  # points made a chunk at a time, same grid
    axis = torch.linspace(-1, 1, 9)
    expected = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).norm(dim=-1)
    assert grid.shape == (9, 9, 9) and torch.allclose(torch.from_numpy(grid), expected, atol=1e-6)


def test_eval_geometry_resolution_is_bounded_before_any_run_is_loaded(runner, tmp_path) -> None:
    pytest.importorskip("sds_eval")
    out = tmp_path / "run"
    assert generate(runner, out).exit_code == 0
    line = one_sentence(runner.invoke(app, ["eval", "geometry", str(out), "--resolution", "100000"]))
    assert "--resolution 100000 would need about 28 PiB" in line and "at most 512 is accepted" in line
    line = one_sentence(runner.invoke(app, ["eval", "clip-r-precision", str(out), "--resolution", "1000000"]))
    assert "--resolution 1000000 would need about 11 TiB" in line and "at most 4096" in line


def test_recorded_guidance_facts_are_checked_before_the_generator_is_built(runner, tmp_path) -> None:
    out = tmp_path / "run"
    assert generate(runner, out).exit_code == 0
    path = out / "ckpts" / "last.pt"
    original = torch.load(path, weights_only=True)
    for facts, message in (
        ({**original["guidance"], "resolution": 10**6}, "resolution 1000000 would need about 11 TiB"),
        ({**original["guidance"], "channels": "three"}, "channels must be a whole number"),
        ({"space": "rgb"}, "lack resolution"),
        ("junk", "are not a mapping"),
    ):
        torch.save({**original, "guidance": facts}, path)
        line = one_sentence(runner.invoke(app, ["export", str(out)]))
        assert "the guidance facts recorded in" in line and message in line


def test_image_sides_in_configs_are_bounded(runner, tmp_path) -> None:
    line = one_sentence(generate(runner, tmp_path / "run", "--set", "cameras.width=1000000"))
    assert "cameras.width 1000000 would need about" in line and "at most 4096 is accepted" in line
    config = tmp_path / "big.json"
    config.write_text(json.dumps({"generator": {"resolution": 100000}}))
    line = one_sentence(generate(runner, tmp_path / "run", "--config", str(config)))
    assert "generator.resolution 100000 would need about 112 GiB" in line
    assert not (tmp_path / "run").exists()


# --- 9: terminal control characters ---------------------------------------------------------------


def test_printable_escapes_controls_and_bidi_overrides() -> None:
    assert printable("a\x1b[2Jb\x07\x9b\x7f\u202e\u2066c\td\n") == r"a\x1b[2Jb\x07\x9b\x7f\u202e\u2066c\x09d\x0a"
    assert printable("a red cube, side view é 日本") == "a red cube, side view é 日本"


def test_batch_table_shows_a_prompt_file_escape_as_text(runner, tmp_path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"a red cube{ESC}\n")
    out = tmp_path / "batch"
    args = ["batch", str(prompts), "--out", str(out), *IMAGE_RUN, *SHORT]
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output, repr(result.output)
    assert r"a red cube\x1b[2J\x1b[H" in result.stdout


def test_batch_table_and_eval_tables_hold_no_control_bytes() -> None:
    from io import StringIO

    from rich.console import Console

    from sds_cli.batch import JobResult
    from sds_cli.commands.evaluate import geometry_table, r_precision_table

    hostile = f"a red cube{ESC}\u202e"
    results = [JobResult(hostile, 0, "/runs/x", "failed", error=f"the prompt {hostile} failed", node=f"n{ESC}")]
    row = {"run": f"/runs/{ESC}", "object": "a red cube", "iou": 0.5, "iou_yaw_free": 0.5, "yaw_degrees": 0.0}
    row |= {"chamfer": 0.1, "colour_error": None, "level": None}
    report = {"captions": 2, "views": 1, "r_precision": {"m": {"color": 1.0, "geometry": None}}}
    report["runs"] = [
        {"run": f"/runs/{ESC}", "prompt": hostile, "r_precision": {"m": {"color": 1.0, "geometry": None}}}
    ]
    for table in (batch_table(results), geometry_table([row]), r_precision_table(report)):
        buffer = StringIO()
        Console(file=buffer, width=200, color_system=None).print(table)
        text = buffer.getvalue()
        assert "\x1b" not in text and "\u202e" not in text and r"\x1b[2J" in text


def test_eval_geometry_table_shows_a_run_folder_escape_as_text(runner, tmp_path, monkeypatch) -> None:
    pytest.importorskip("sds_eval")
    import sds_eval.geometry

    run = tmp_path / f"run{ESC}"
    row = {"run": str(run), "prompt": f"a red cube{ESC}", "object": "a red cube", "iou": 0.5}
    row |= {"iou_yaw_free": 0.5, "yaw_degrees": 0.0, "chamfer": 0.1, "colour_error": 0.2, "level": None}
    monkeypatch.setattr(sds_eval.geometry, "run_geometry", lambda run_dir, resolution, device: row)
    result = runner.invoke(app, ["eval", "geometry", str(run)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output, repr(result.output)
    assert r"\x1b[2J\x1b[H" in result.stdout


def test_error_sentences_show_escapes_as_text(runner, tmp_path) -> None:
    config = tmp_path / f"shared{ESC}.json"
    line = one_sentence(generate(runner, tmp_path / "run", "--config", str(config)))
    assert "does not exist" in line and r"shared\x1b[2J\x1b[H.json" in line
    assert "\x1b" not in line


# --- 11: validated before the work ----------------------------------------------------------------


def test_deeply_nested_set_and_config_are_one_sentence(runner, tmp_path) -> None:
    deep = "[" * 5000 + "]" * 5000
    assert "nested deeper than 32 levels" in one_sentence(generate(runner, tmp_path / "run", "--set", f"loss.x={deep}"))
    config = tmp_path / "deep.json"
    tree: dict = {}
    for _ in range(40):
        tree = {"a": tree}
    config.write_text(json.dumps({"generator": tree}))
    assert "nested deeper than 32 levels" in one_sentence(generate(runner, tmp_path / "run", "--config", str(config)))


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**70)])
def test_seed_out_of_range_is_one_sentence(runner, tmp_path, seed) -> None:
    line = one_sentence(generate(runner, tmp_path / "run", "--seed", seed))
    assert f"run.seed must be a whole number from 0 to {2**63 - 1}" in line
    assert not (tmp_path / "run").exists()


def test_unwritable_eval_json_is_refused_before_evaluating(runner, tmp_path, monkeypatch) -> None:
    pytest.importorskip("sds_eval")
    import sds_eval.geometry

    def never(*args, **kwargs):
        raise AssertionError("evaluated before the --json path was checked")

    monkeypatch.setattr(sds_eval.geometry, "run_geometry", never)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for target, message in (
        (tmp_path / "missing" / "out.json", "does not exist; make it first"),
        (afile / "out.json", "does not exist; make it first"),
    ):
        line = one_sentence(runner.invoke(app, ["eval", "geometry", str(tmp_path), "--json", str(target)]))
        assert message in line


def test_non_utf8_prompts_are_refused_before_rendering(runner, tmp_path, monkeypatch) -> None:
    pytest.importorskip("sds_eval")
    import sds_eval.evaluate

    def never(*args, **kwargs):
        raise AssertionError("rendered before the prompts file was read")

    monkeypatch.setattr(sds_eval.evaluate, "render_run", never)
    run = tmp_path / "run"
    (run / "ckpts").mkdir(parents=True)
    (run / "ckpts" / "last.pt").write_bytes(b"")
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("a red cube\n".encode("utf-16"))
    line = one_sentence(runner.invoke(app, ["eval", "clip-r-precision", str(run), "--prompts", str(prompts)]))
    assert "is not UTF-8 text" in line
    prompts.write_text("\n\n")
    line = one_sentence(runner.invoke(app, ["eval", "clip-r-precision", str(run), "--prompts", str(prompts)]))
    assert "holds no captions" in line


def test_unreadable_mesh_init_is_one_sentence(tmp_path) -> None:
    pytest.importorskip("sds_mesh")
    pytest.importorskip("sds_shapes")
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a mesh\x00\xff" * 20)
    args = ["generate", "a red cube", "--generator", "mesh", "--guidance", "shapes", "--preset", "draft"]
    args += ["--device", "cpu", "--out", str(tmp_path / "run"), "--set", f"generator.init={bad}"]
    line = one_sentence(CliRunner().invoke(app, [*args, "--steps", "1"]))
    assert f"{bad} is not a readable mesh" in line


# --- 12: warnings -----------------------------------------------------------------------------------


def test_a_warning_is_one_line(tmp_path) -> None:
    tiny = typer.Typer()

    @tiny.command()
    def work() -> None:
        with user_errors():
            warnings.warn(f"no mesh written:\n  the field is empty{ESC}", UserWarning, stacklevel=1)
        typer.echo("done")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        result = CliRunner().invoke(tiny, [])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [r"warning: no mesh written: the field is empty\x1b[2J\x1b[H"]
    assert warnings.showwarning is not None and "sds_cli" not in warnings.showwarning.__module__  # restored


def test_warning_display_is_restored_and_paths_stay_readable() -> None:
    before = warnings.showwarning
    with user_errors():
        assert warnings.showwarning is not before
    assert warnings.showwarning is before
    assert Path(printable("/runs/a red cube/seed-0")) == Path("/runs/a red cube/seed-0")
