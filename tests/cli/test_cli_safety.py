"""The `sds` command on hostile or wrong input: one sentence on stderr, exit status 2, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("typer")
from typer.testing import CliRunner

from sds_cli.app import app
from sds_core.files import RunLock
from tests.cli.test_cli import IMAGE_RUN, TARGET_PLUGIN
from tests.core.test_run_safety import plant

SHORT = ["--steps", "2", "--set", "run.preview_every=0"]


@pytest.fixture
def runner(install_entry_point) -> CliRunner:
    install_entry_point("sds-target", "sds_target_plugin", TARGET_PLUGIN, attr="plugin")
    return CliRunner()


def one_sentence(result, code: int = 2) -> str:
    """The single stderr line of a refused command."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def generate(runner, out, *extra: str):
    return runner.invoke(app, ["generate", "a red cube", *IMAGE_RUN, "--out", str(out), *SHORT, *extra])


def test_planted_checkpoint_is_refused_by_every_command(runner, tmp_path) -> None:
    out = tmp_path / "run"
    assert generate(runner, out).exit_code == 0
    marker = tmp_path / "owned"
    from sds_core.run import RunFolder

    plant(RunFolder(out), marker)
    for args in (["resume", str(out)], ["export", str(out)]):
        assert "not loaded, for safety" in one_sentence(runner.invoke(app, args))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n")
    batch_out = tmp_path / "batch"
    seed_dir = batch_out / "000-a-red-cube" / "seed-0"
    batch = ["batch", str(prompts), "--out", str(batch_out), *IMAGE_RUN, *SHORT]
    assert runner.invoke(app, batch).exit_code == 0
    plant(RunFolder(seed_dir), marker)
    again = runner.invoke(app, batch)  # a finished run is checked (safely) before it is skipped
    summary = json.loads((batch_out / "batch.json").read_text())
    assert again.exit_code == 1 and summary["runs"][0]["status"] == "failed"
    assert "not loaded, for safety" in summary["runs"][0]["error"]
    assert not marker.exists()


def test_damaged_checkpoint_is_one_sentence(runner, tmp_path) -> None:
    out = tmp_path / "run"
    assert generate(runner, out).exit_code == 0
    (out / "ckpts" / "last.pt").write_bytes(b"")
    assert "not a readable sds checkpoint" in one_sentence(runner.invoke(app, ["resume", str(out)]))


def test_out_that_is_a_file_or_holds_other_files_is_refused(runner, tmp_path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert "is a file, not a folder" in one_sentence(generate(runner, afile))
    assert "cannot write to the run folder" in one_sentence(generate(runner, afile / "run"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert "holds no sds run (notes.txt)" in one_sentence(generate(runner, mine))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_second_writer_gets_one_sentence(runner, tmp_path) -> None:
    out = tmp_path / "run"
    assert generate(runner, out).exit_code == 0
    lock = RunLock(out).acquire()  # another process, as far as the commands can tell
    try:
        for args in (["resume", str(out), "--steps", "3"], ["export", str(out)]):
            assert "in use by another sds process" in one_sentence(runner.invoke(app, args))
        fresh = tmp_path / "fresh"
        held = RunLock(fresh).acquire()
        assert "in use by another sds process" in one_sentence(generate(runner, fresh))
        held.release()
    finally:
        lock.release()
    assert runner.invoke(app, ["resume", str(out), "--steps", "3"]).exit_code == 0


def test_default_out_of_a_repeated_prompt_picks_a_fresh_folder(runner, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    lock = RunLock(tmp_path / "runs" / "a-red-cube").acquire()  # a run of this prompt just starting
    try:
        result = runner.invoke(app, ["generate", "a red cube", *IMAGE_RUN, *SHORT])
    finally:
        lock.release()
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "a-red-cube-2" / "final" / "image.png").exists()
    assert not (tmp_path / "runs" / "a-red-cube" / "config.json").exists()


def test_resume_with_fewer_steps_keeps_the_config(runner, tmp_path) -> None:
    out = tmp_path / "run"
    assert generate(runner, out, "--steps", "4").exit_code == 0
    before = (out / "config.json").read_bytes()
    assert "fewer than the 4 steps" in one_sentence(runner.invoke(app, ["resume", str(out), "--steps", "2"]))
    assert (out / "config.json").read_bytes() == before


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "optim.lr=NaN"],
        ["--set", "optim.lr=Infinity"],
        ["--set", "optim.lr=-1"],
        ["--set", "optim.betas=[2,2]"],
    ],
)
def test_bad_optimiser_values_are_exit_2(runner, tmp_path, args) -> None:
    assert "optim." in one_sentence(generate(runner, tmp_path / "run", *args))
    assert not (tmp_path / "run").exists()


def test_non_utf8_config_is_exit_2(runner, tmp_path) -> None:
    config = tmp_path / "bad.json"
    config.write_bytes(b"\xff\xfe{}")
    assert "not UTF-8" in one_sentence(generate(runner, tmp_path / "run", "--config", str(config)))


def test_bad_export_and_eval_options_are_exit_2(runner, tmp_path) -> None:
    out = tmp_path / "run"
    assert generate(runner, out).exit_code == 0
    result = runner.invoke(app, ["export", str(out), "--resolution", "-4"])
    assert "--resolution must be at least 2" in one_sentence(result)
    pytest.importorskip("sds_eval")
    result = runner.invoke(app, ["eval", "geometry", str(out), "--resolution", "0"])
    assert "--resolution must be at least 2" in one_sentence(result)
    result = runner.invoke(app, ["eval", "geometry", str(out), "--json", str(tmp_path)])
    assert "is a folder" in one_sentence(result)


def test_out_with_markup_characters_is_printed_as_is(runner, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a short path: the final panel does not fold it
    out = Path("[/bold] r [red]")
    result = generate(runner, out)
    assert result.exit_code == 0, result.output
    assert str(out / "ckpts" / "last.pt") in result.stdout.replace("\n", "")
    again = runner.invoke(app, ["resume", str(out)])
    assert again.exit_code == 0 and f"{out} is already finished" in again.stdout.replace("\n", "")
