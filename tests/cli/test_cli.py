"""The `sds` command, driven through Typer's CliRunner and, for signals, a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("typer")
from typer.testing import CliRunner

from sds_cli.app import app

REPO = Path(__file__).resolve().parents[2]
TARGET_PLUGIN = "from tests.conftest import TargetPlugin\nplugin = TargetPlugin()\n"
VOXELS = """
from dataclasses import dataclass
from sds_core.hookspecs import hookimpl
from sds_core.plugins import PluginSpec

@dataclass
class VoxelConfig:
    size: int = 16

@hookimpl
def sds_register_generators(registry):
    registry.add(PluginSpec("voxels", "throwaway:nothing", VoxelConfig, "A throwaway voxel generator."))
"""
IMAGE_RUN = ["--generator", "image", "--guidance", "target", "--preset", "draft", "--device", "cpu"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def target(install_entry_point):
    install_entry_point("sds-target", "sds_target_plugin", TARGET_PLUGIN, attr="plugin")
    return install_entry_point


def test_plugins_lists_an_entry_point_plugin(runner, install_entry_point) -> None:
    install_entry_point("throwaway-voxels", "throwaway_voxels", VOXELS)
    result = runner.invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert set(listing) >= {"generator", "guidance", "loss"}
    assert {
        "name": "voxels",
        "package": "throwaway-voxels",
        "version": "0.1.0",
        "description": "A throwaway voxel generator.",
    } in listing["generator"]
    assert any(item["name"] == "sds" and item["package"] == "sds-core" for item in listing["loss"])
    table = runner.invoke(app, ["plugins"])
    assert table.exit_code == 0 and "voxels" in table.stdout and "throwaway-voxels" in table.stdout


def test_duplicate_plugin_fails_naming_both_providers(runner, install_entry_point) -> None:
    install_entry_point("voxels-a", "voxels_a", VOXELS)
    install_entry_point("voxels-b", "voxels_b", VOXELS)
    result = runner.invoke(app, ["plugins"])
    assert result.exit_code == 2
    assert "voxels-a" in result.stderr and "voxels-b" in result.stderr
    assert "Traceback" not in result.output


def test_unknown_plugin_is_one_sentence_and_exit_2(runner, target, tmp_path) -> None:
    result = runner.invoke(app, ["generate", "x", "--generator", "image", "--guidance", "no-such-backend"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "no-such-backend" in lines[0] and "available:" in lines[0] and "target" in lines[0]
    assert "Traceback" not in result.output


def test_bad_set_value_is_exit_2(runner, target, tmp_path) -> None:
    result = runner.invoke(app, ["generate", "x", *IMAGE_RUN, "--out", str(tmp_path / "r"), "--set", "run.steps=many"])
    assert result.exit_code == 2 and "run.steps must be a whole number" in result.stderr
    result = runner.invoke(app, ["generate", "x", *IMAGE_RUN, "--out", str(tmp_path / "r"), "--preset", "fast"])
    assert result.exit_code == 2 and "unknown preset 'fast'" in result.stderr


def test_generate_resume_and_export(runner, target, tmp_path) -> None:
    out = tmp_path / "run"
    args = ["generate", "a red cube", *IMAGE_RUN, "--out", str(out), "--steps", "6", "--set", "run.preview_every=3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "step 6/6" in result.stdout  # plain progress when not on a terminal
    assert "image.png" in result.stdout and "metrics.jsonl" in result.stdout  # the final panel
    assert (out / "final" / "image.png").exists() and (out / "previews" / "step-000006.png").exists()

    again = runner.invoke(app, ["resume", str(out), "--device", "cpu"])
    assert again.exit_code == 0 and "already finished" in again.stdout
    longer = runner.invoke(app, ["resume", str(out), "--device", "cpu", "--steps", "9"])
    assert longer.exit_code == 0, longer.output
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 9

    (out / "final" / "image.png").unlink()
    exported = runner.invoke(app, ["export", str(out), "--device", "cpu"])
    assert exported.exit_code == 0, exported.output
    assert (out / "final" / "image.png").exists()
    missing = runner.invoke(app, ["export", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no checkpoint" in missing.stderr


def _env_with(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_help_and_plugins_do_not_import_torch(target) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from sds_cli.app import app\n"
        "for args in (['--help'], ['plugins'], ['plugins', '--json']):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'nerfacc', 'transformers') if m in sys.modules))\n"
    )
    # The test plugin itself imports torch (it is a guidance); list only real installed plugins here.
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_sigterm_writes_a_checkpoint_and_the_run_resumes(target, tmp_path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sds_cli.app", "generate", "x", *IMAGE_RUN, "--out", str(out), "--steps", "100000"]
    cmd += ["--set", "run.preview_every=0", "--set", "run.checkpoint_every=0"]
    proc = subprocess.Popen(cmd, env=_env_with(target.site), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "metrics.jsonl").exists() or (out / "metrics.jsonl").stat().st_size == 0:
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "checkpoint written" in stderr and "sds resume" in stderr and "Traceback" not in stderr
    assert (out / "ckpts" / "last.pt").exists()
    done = len((out / "metrics.jsonl").read_text().splitlines())
    resume = [sys.executable, "-m", "sds_cli.app", "resume", str(out), "--device", "cpu", "--steps", str(done + 3)]
    finished = subprocess.run(resume, env=_env_with(target.site), capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert f"resumed at step {done}" in finished.stdout
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, done + 4))


@pytest.mark.parametrize(
    ("guidance", "prompts_text"),
    [
        ("target", ["first thing", "second thing", "third thing"]),
        ("shapes", ["a red cube", "a blue sphere", "a green cone"]),
    ],
)
def test_batch_resumes_where_it_stopped(target, tmp_path, guidance, prompts_text) -> None:
    if guidance == "shapes":
        pytest.importorskip("sds_shapes")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"# three runs\n{prompts_text[0]}\n{prompts_text[1]}\n\n{prompts_text[2]}\n")
    out = tmp_path / "batch"
    run = ["--generator", "image", "--guidance", guidance, "--preset", "draft", "--device", "cpu"]
    cmd = [sys.executable, "-m", "sds_cli.app", "batch", str(prompts), "--out", str(out), *run]
    cmd += ["--steps", "400", "--set", "run.preview_every=0", "--set", "run.checkpoint_every=20"]
    proc = subprocess.Popen(cmd, env=_env_with(target.site), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folders = [out / f"{i:03d}-{p.replace(' ', '-')}" / "seed-0" for i, p in enumerate(prompts_text)]
    second_metrics = folders[1] / "metrics.jsonl"
    deadline = time.time() + 120
    while not (second_metrics.exists() and len(second_metrics.read_text().splitlines()) > 30):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "run the same command again" in stderr
    first_ckpt = (folders[0] / "ckpts" / "last.pt").stat().st_mtime_ns

    again = subprocess.run(cmd, env=_env_with(target.site), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "batch.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["skipped", "resumed", "finished"]
    assert (folders[0] / "ckpts" / "last.pt").stat().st_mtime_ns == first_ckpt  # not redone
    for folder in folders:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == list(range(1, 401))
        assert (folder / "final" / "image.png").exists()


def test_batch_reports_a_missing_prompts_file(runner, tmp_path) -> None:
    result = runner.invoke(app, ["batch", str(tmp_path / "none.txt")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_plugins_show_lists_each_option_with_type_default_and_comment(runner) -> None:
    result = runner.invoke(app, ["plugins", "show", "sds", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["kind"] == "loss" and shown["package"] == "sds-core"
    options = {o["name"]: o for o in shown["options"]}
    scale = options["guidance_scale"]
    assert scale["type"] == "float | None" and scale["default"] is None and "omega" in scale["doc"]
    assert all(o["doc"] for o in shown["options"][:2])
    table = runner.invoke(app, ["plugins", "show", "sds"])
    assert table.exit_code == 0 and "guidance_scale" in table.stdout and "loss.OPTION" in table.stdout
    missing = runner.invoke(app, ["plugins", "show", "no-such-plugin"])
    assert missing.exit_code == 2 and "no plugin named 'no-such-plugin'" in missing.stderr


def test_plugins_show_keeps_brackets_of_types(runner) -> None:
    pytest.importorskip("sds_shapes")
    table = runner.invoke(app, ["plugins", "show", "shapes"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "tuple[float, float, float]" in table.stdout and "[1.0, 1.0, 1.0]" in table.stdout


def test_every_installed_plugin_documents_each_option() -> None:
    """`sds plugins show` reads the source comments: every option of every plugin has one (or sits
    right under a documented option, whose comment it shares)."""
    from sds_core.option_docs import option_docs
    from sds_core.plugins import KINDS, load_catalog

    catalog = load_catalog()
    undocumented = [
        f"{kind} {spec.name}: {option.name}"
        for kind in KINDS
        for spec in catalog.registry(kind)
        for option in option_docs(spec.config)
        if not option.doc
    ]
    assert not undocumented


def test_default_preset_on_a_cpu_states_its_cost_once(runner, target, tmp_path) -> None:
    """Without --preset (paper) on a CPU: one line with the measured cost a step, the ETA and how
    to get a draft; an explicit --preset says nothing."""
    args = ["generate", "a red cube", "--generator", "image", "--guidance", "target", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a"), "--steps", "6", "--set", "run.preview_every=0"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "s a step" in line]
    assert len(lines) == 1 and "the paper preset on this CPU" in lines[0] and "--preset draft" in lines[0]
    explicit = runner.invoke(app, ["generate", "a red cube", *IMAGE_RUN, "--out", str(tmp_path / "b"), "--steps", "6"])
    assert explicit.exit_code == 0 and "s a step" not in explicit.stdout


def test_cost_notice_estimates_from_the_steps_after_the_first() -> None:
    import io

    from rich.console import Console

    from sds_cli.progress import CostNotice
    from sds_core.events import RunStarted, StepFinished

    out = io.StringIO()
    notice = CostNotice(Console(file=out, width=200), "paper", warmup=2)
    notice(RunStarted(Path("x"), 0, 1003, "cpu"))
    for step, elapsed in ((1, 50.0), (2, 60.0), (3, 70.0), (4, 80.0)):  # 10 s a step after a slow first
        notice(StepFinished(step, 1003, 0.0, {}, 0.0, 0.0, {}, elapsed))
    text = out.getvalue()
    assert text.count("s a step") == 1 and "10.0 s a step" in text and "1,003 steps" in text
    assert "2.8 h" in text  # 10 s x 1,000 steps left (after step 3)
    assert "--preset paper-cpu" in text and "--preset draft" in text
    quiet = io.StringIO()
    gpu = CostNotice(Console(file=quiet), "paper", warmup=1)
    gpu(RunStarted(Path("x"), 0, 10, "cuda"))
    for step in (1, 2, 3):
        gpu(StepFinished(step, 10, 0.0, {}, 0.0, 0.0, {}, float(step)))
    assert quiet.getvalue() == ""
