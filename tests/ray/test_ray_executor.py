"""`sds batch --executor ray` on a real local Ray cluster (loopback, 2 CPUs), with a killed worker."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("typer")
from typer.testing import CliRunner

from sds_cli.app import app

REPO = Path(__file__).resolve().parents[2]
RUN = ["--generator", "image", "--guidance", "shapes", "--preset", "draft", "--device", "cpu"]


def test_without_ray_the_executor_is_one_sentence(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray sees
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\n")
    result = CliRunner().invoke(app, ["batch", str(prompts), "--executor", "ray", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert result.stderr.strip().endswith('install it with pip install "sds-cli[ray]"')
    assert "Traceback" not in result.output
    bad = CliRunner().invoke(app, ["batch", str(prompts), "--executor", "slurm"])
    assert bad.exit_code == 2 and "unknown executor 'slurm'" in bad.stderr


ray = pytest.importorskip("ray")
pytest.importorskip("sds_guidance")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`ray start --head` on 127.0.0.1 with 2 CPUs, as a user starts a one-node cluster."""
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    assert ray_cli, "the ray command is missing"
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps every Ray address on loopback (one-machine cluster).
    # RAY_AUTH_MODE=token (Ray >= 2.52): the cluster and the driver share one token. A fresh machine
    # has no ~/.ray/auth_token and `ray start` then refuses to start, so the test makes its own.
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    env["PYTHONPATH"] = str(REPO)
    start = [ray_cli, "start", "--head", "--num-cpus", "2", "--num-gpus", "0", "--node-ip-address", "127.0.0.1"]
    start += ["--port", str(port), "--include-dashboard", "false", "--temp-dir", str(temp)]
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _batch(address: str, prompts: Path, out: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "sds_cli.app", "batch", str(prompts), "--out", str(out), *RUN]
    return [*cmd, "--executor", "ray", "--address", address, "--max-retries", "2", *extra]


def test_three_shapes_prompts_on_ray(cluster, tmp_path) -> None:
    address, env = cluster
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\na blue sphere\na green cone\n")
    out = tmp_path / "batch"
    done = subprocess.run(
        _batch(address, prompts, out, "--steps", "30"), env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr + done.stdout
    summary = json.loads((out / "batch.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["finished"] * 3
    for run in summary["runs"]:
        folder = Path(run["out_dir"])
        assert (folder / "final" / "image.png").exists() and (folder / "ckpts" / "last.pt").exists()
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 30
        assert run["node"]
    again = subprocess.run(
        _batch(address, prompts, out, "--steps", "30"), env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0
    assert [r["status"] for r in json.loads((out / "batch.json").read_text())["runs"]] == ["skipped"] * 3


def _worker_pids(title_prefix: str) -> list[int]:
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith(f"ray::{title_prefix}"):
            pids.append(proc.info["pid"])
    return pids


def test_killed_worker_is_retried_and_resumes_from_its_checkpoint(cluster, tmp_path) -> None:
    pytest.importorskip("psutil")
    address, env = cluster
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\na yellow torus\n")
    out = tmp_path / "batch"
    cmd = _batch(address, prompts, out, "--steps", "600", "--set", "run.checkpoint_every=50")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = out / "001-a-yellow-torus" / "seed-0"
    metrics = victim / "metrics.jsonl"
    deadline = time.time() + 240
    while not ((victim / "ckpts" / "last.pt").exists() and len(metrics.read_text().splitlines()) > 70):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    pids = _worker_pids("sds-001-a-yellow-torus")
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    killed_at = time.time()
    # only complete lines: the worker may have been killed (or read) in the middle of writing one
    complete = metrics.read_text().split("\n")[:-1]
    before = {json.loads(line)["step"]: line for line in complete}
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr + stdout

    summary = json.loads((out / "batch.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["finished", "resumed"]
    lines = metrics.read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == list(range(1, 601))
    kept = [line for line in lines if line == before.get(json.loads(line)["step"])]
    # the retry kept the checkpointed steps as they were and redid only the steps after the checkpoint
    assert len(kept) >= 50 and len(kept) % 50 == 0
    resumed_lines = [json.loads(line) for line in lines[len(kept) :]]
    assert all(record["wall_time"] > killed_at for record in resumed_lines)
    assert (victim / "final" / "image.png").exists()
