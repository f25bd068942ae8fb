"""`sds` commands on run folders planted with links, on batch options read before validation, and
on prompt files that are not text: one sentence, exit status 2, nothing written outside."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("typer")
from typer.testing import CliRunner

from sds_cli.app import app
from sds_cli.batch import JobResult, SummaryWriter
from tests.cli.test_cli import IMAGE_RUN, TARGET_PLUGIN
from tests.cli.test_cli_safety import SHORT, generate, one_sentence


@pytest.fixture
def runner(install_entry_point) -> CliRunner:
    install_entry_point("sds-target", "sds_target_plugin", TARGET_PLUGIN, attr="plugin")
    return CliRunner()


def test_export_into_a_final_folder_replaced_by_a_link_is_refused(runner, tmp_path) -> None:
    out = tmp_path / "run"
    assert generate(runner, out).exit_code == 0
    public = tmp_path / "public_html"
    public.mkdir()
    (public / "index.html").write_text("precious")
    for path in (out / "final").iterdir():
        path.unlink()
    (out / "final").rmdir()
    (out / "final").symlink_to(public)
    line = one_sentence(runner.invoke(app, ["export", str(out)]))
    assert "final is a symbolic link" in line
    assert [p.name for p in public.iterdir()] == ["index.html"] and (public / "index.html").read_text() == "precious"


def test_a_batch_run_folder_planted_as_a_link_is_not_followed(runner, tmp_path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n")
    batch_out = tmp_path / "batch"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (batch_out / "000-a-red-cube").mkdir(parents=True)
    (batch_out / "000-a-red-cube" / "seed-0").symlink_to(elsewhere)
    result = runner.invoke(app, ["batch", str(prompts), "--out", str(batch_out), *IMAGE_RUN, *SHORT])
    summary = json.loads((batch_out / "batch.json").read_text())
    assert result.exit_code == 1 and summary["runs"][0]["status"] == "failed"
    assert "seed-0 is a symbolic link, not a folder" in summary["runs"][0]["error"]
    assert list(elsewhere.iterdir()) == []


def test_batch_options_are_validated_before_the_seeds_are_read(runner, tmp_path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n")
    base = ["batch", str(prompts), "--out", str(tmp_path / "b"), *IMAGE_RUN, *SHORT]
    assert "run.seed" in one_sentence(runner.invoke(app, [*base, "--set", "run.seed=abc"]))
    assert "run.seed" in one_sentence(runner.invoke(app, [*base, "--seed", str(2**63 - 1), "--seeds", "2"]))
    assert not (tmp_path / "b").exists()


def test_a_prompts_file_that_is_not_utf8_is_one_sentence(runner, tmp_path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"a red cube\n\xff\xfe a blue \x81 torus\n")
    line = one_sentence(runner.invoke(app, ["batch", str(prompts), "--out", str(tmp_path / "b"), *IMAGE_RUN]))
    assert "is not UTF-8 text" in line


def test_resume_rebuilds_an_incomplete_final_folder(runner, tmp_path) -> None:
    out = tmp_path / "run"
    assert generate(runner, out).exit_code == 0
    (out / "final" / ".sds-finished").unlink()  # a final/ an interrupted export of an older version left
    result = runner.invoke(app, ["resume", str(out)])
    assert result.exit_code == 0 and "already finished" not in result.output
    assert (out / "final" / ".sds-finished").is_file()
    again = runner.invoke(app, ["resume", str(out)])
    assert again.exit_code == 0 and "already finished" in again.output


def test_batch_summary_is_rewritten_at_intervals_not_after_every_run(tmp_path) -> None:
    path = tmp_path / "batch.json"
    writer = SummaryWriter(path, every=3600)
    results = [JobResult("p", 0, "d", "skipped")]
    writer.update(results)
    assert not path.exists()
    writer.update(results, final=True)
    assert json.loads(path.read_text())["counts"] == {"skipped": 1}
    os.utime(path, (0, 0))
    writer.update(results * 2)  # within the interval: not rewritten
    assert json.loads(path.read_text())["counts"] == {"skipped": 1}
