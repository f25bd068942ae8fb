"""Run folders as a trust boundary: checkpoints that cannot carry code, folders that are never
clobbered, one lock per folder, files that honour the umask, and bad values refused up front."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sds_core.checkpoint import FORMAT, checkpoint_step, load_checkpoint, rng_state, set_rng_state
from sds_core.config import load_config_file
from sds_core.errors import ConfigError, RunFolderBusy, SdsError
from sds_core.files import RunLock, atomic_write
from sds_core.lifecycle import is_finished, resume_run, start_run
from sds_core.run import RunFolder

NAMES = {"generator": "image", "guidance": "target"}


def overrides(steps: int) -> dict:
    return {"run": {"steps": steps, "preview_every": 2, "checkpoint_every": 2}, "cameras": {"width": 8}}


def finished_run(tmp_path, catalog, steps: int = 4, name: str = "run"):
    start_run("x", tmp_path / name, "draft", overrides(steps), NAMES, "cpu", [], catalog).run()
    return RunFolder(tmp_path / name)


class _Planted:
    """Unpickling this runs `exec`, which creates the marker file: what a hostile checkpoint does."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def plant(folder: RunFolder, marker) -> None:
    """Replace last.pt by a well-formed checkpoint that carries one extra, code-running object."""
    payload = torch.load(folder.last_checkpoint, weights_only=True)
    payload["extra"] = _Planted(marker)
    torch.save(payload, folder.last_checkpoint)


def test_planted_pickle_never_runs(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog)
    marker = tmp_path / "owned"
    plant(folder, marker)
    for load in (
        lambda: resume_run(folder.root, "cpu", catalog=catalog),
        lambda: resume_run(folder.root, "cpu", catalog=catalog, lock=False),
        lambda: is_finished(folder.root),
    ):
        with pytest.raises(SdsError, match="not loaded, for safety"):
            load()
    assert not marker.exists()
    # the planted file is real: an unsafe load would have run it
    torch.load(folder.last_checkpoint, weights_only=False)
    assert marker.exists()


UNSAFE_LOADS = ("weights_only=False", "pickle.load", "allow_pickle=True", "torch.load(")
PACKAGES = Path(__file__).resolve().parents[2] / "packages"


def test_no_package_unpickles_a_file() -> None:
    """Every torch file is read through sds_core.checkpoint.load_plain (weights_only=True) or a
    torch.load that says weights_only=True on the same line; nothing else unpickles."""
    found = []
    for source in sorted(PACKAGES.glob("*/src/**/*.py")):
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            unsafe = [p for p in UNSAFE_LOADS if p in line and not (p == "torch.load(" and "weights_only=True" in line)]
            if unsafe:
                found.append(f"{source.relative_to(PACKAGES)}:{number}: {line.strip()}")
    assert not found, "unsafe loads:\n" + "\n".join(found)


def test_old_format_checkpoint_is_refused(tmp_path) -> None:
    path = tmp_path / "last.pt"
    # format 1 pickled numpy's RNG state (an ndarray) and so needed an unsafe load
    torch.save({"format": 1, "step": 3, "rng": {"numpy": np.random.get_state()}}, path)
    with pytest.raises(SdsError, match=r"older than format 2.*not loaded, for safety"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", ["empty", "random", "truncated"])
def test_damaged_checkpoint_is_one_sentence(tmp_path, catalog, damage) -> None:
    folder = finished_run(tmp_path, catalog)
    data = folder.last_checkpoint.read_bytes()
    broken = {"empty": b"", "random": os.urandom(4096), "truncated": data[: len(data) // 2]}[damage]
    folder.last_checkpoint.write_bytes(broken)
    with pytest.raises(SdsError, match="not a readable sds checkpoint"):
        resume_run(folder.root, "cpu", catalog=catalog)


def test_checkpoint_of_another_generator_is_refused(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog)
    record = folder.read_config()
    record["config"]["generator"]["resolution"] = 4  # the checkpoint holds an 8 x 8 image
    folder.config_path.write_text(json.dumps(record))
    with pytest.raises(SdsError, match="does not match the run's config"):
        resume_run(folder.root, "cpu", catalog=catalog)


def test_checkpoint_is_plain_data_and_rng_round_trips(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog)
    payload = torch.load(folder.last_checkpoint, weights_only=True)
    assert payload["format"] == FORMAT == 2 and payload["prompt"] == "x" and payload["preset"] == "draft"
    assert checkpoint_step(folder.last_checkpoint) == 4
    state = rng_state()
    before = (torch.rand(3), random.random(), np.random.rand(3))
    set_rng_state(state)
    after = (torch.rand(3), random.random(), np.random.rand(3))
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and np.array_equal(before[2], after[2])


def test_out_that_is_a_file_or_a_foreign_folder_is_refused_untouched(tmp_path, catalog) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        start_run("x", afile, "draft", overrides(2), NAMES, "cpu", [], catalog)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text("my numbers\n")
    (mine / "notes.txt").write_text("my notes\n")
    with pytest.raises(ConfigError, match=r"not empty and holds no sds run \(metrics.jsonl, notes.txt\)"):
        start_run("x", mine, "draft", overrides(2), NAMES, "cpu", [], catalog)
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.jsonl", "notes.txt"]
    assert (mine / "metrics.jsonl").read_text() == "my numbers\n"
    with pytest.raises(SdsError, match="cannot write to the run folder"):
        start_run("x", afile / "run", "draft", overrides(2), NAMES, "cpu", [], catalog)


def test_run_without_config_is_restored_from_its_checkpoint_never_overwritten(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog)
    original = folder.read_config()
    checkpoint = folder.last_checkpoint.read_bytes()
    folder.config_path.unlink()
    with pytest.raises(ConfigError, match=r"holds a run checkpoint but no config\.json"):
        start_run("x", folder.root, "draft", overrides(2), NAMES, "cpu", [], catalog)
    assert folder.last_checkpoint.read_bytes() == checkpoint
    trainer = resume_run(folder.root, "cpu", catalog=catalog, steps=6)
    restored = folder.read_config()
    assert restored["prompt"] == "x" and restored["preset"] == "draft" and trainer.step == 4
    assert {k: v for k, v in restored["config"].items() if k != "run"} == {
        k: v for k, v in original["config"].items() if k != "run"
    }
    trainer.run()
    assert is_finished(folder.root) and folder.read_config()["config"]["run"]["steps"] == 6


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path, catalog) -> None:
    first = start_run("x", tmp_path / "run", "draft", overrides(2), NAMES, "cpu", [], catalog)
    busy = f"in use by another sds process \\(pid {os.getpid()}\\)"
    with pytest.raises(RunFolderBusy, match=busy):
        start_run("y", tmp_path / "run", "draft", overrides(2), NAMES, "cpu", [], catalog)
    first.run()  # the lock goes with the end of the run
    second = resume_run(tmp_path / "run", "cpu", catalog=catalog, steps=3)
    with pytest.raises(RunFolderBusy, match=busy):
        resume_run(tmp_path / "run", "cpu", catalog=catalog)
    resume_run(tmp_path / "run", "cpu", catalog=catalog, lock=False)  # a reader (sds eval) is let in
    second.run()
    assert [m["step"] for m in RunFolder(tmp_path / "run").read_metrics()] == [1, 2, 3]


def test_the_lock_dies_with_its_process(tmp_path) -> None:
    code = textwrap.dedent(
        f"""
        import sys, time
        from sds_core.files import RunLock
        lock = RunLock({str(tmp_path / "run")!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match=f"pid {proc.pid}"):
            RunLock(tmp_path / "run").acquire()
    finally:
        proc.kill()  # SIGKILL: no clean-up code runs
        proc.wait()
    RunLock(tmp_path / "run").acquire().release()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_files_honour_the_umask(tmp_path, catalog, umask, mode) -> None:
    old = os.umask(umask)
    try:
        folder = finished_run(tmp_path, catalog)
        atomic_write(tmp_path / "cache" / "entry.bin", lambda p: p.write_bytes(b"x"))
    finally:
        os.umask(old)
    files = [p for p in folder.root.rglob("*") if p.is_file()] + [tmp_path / "cache" / "entry.bin"]
    assert {"config.json", "last.pt", "image.png", "step-000002.png"} <= {p.name for p in files}
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}


def test_stale_temp_files_are_removed_at_the_next_start(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog)
    stale = [
        folder.ckpt_dir / ".last.pt.sds-0123456789abcdef.tmp",
        folder.root / ".config.json.sds-a1b2a1b2a1b2a1b2.tmp",
    ]
    stale.append(folder.final / ".turntable.mp4.sds-99aa99aa99aa99aa.tmp.mp4")
    for path in stale:
        path.write_bytes(b"half a file")
    (folder.root / ".final.sds-0000000000000000.tmp").mkdir()  # a staged final/ of a killed export
    stale.append(folder.root / ".final.sds-0000000000000000.tmp")
    keep = [folder.root / "notes.tmp", folder.root / ".notes.k3j2h1.tmp"]  # not names the atomic writer uses
    keep.append(folder.root / "sub" / ".x.sds-0123456789abcdef.tmp")  # in a folder sds does not write
    keep[-1].parent.mkdir()
    for path in keep:
        path.write_text("mine")
    resume_run(folder.root, "cpu", catalog=catalog)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    empty = tmp_path / "fresh"
    empty.mkdir()
    (empty / ".config.json.sds-zzzzzzzzzzzzzzzz.tmp").write_bytes(b"")  # not the writer's pattern: foreign
    with pytest.raises(ConfigError, match="is not empty"):
        start_run("x", empty, "draft", overrides(1), NAMES, "cpu", [], catalog)
    (empty / ".config.json.sds-zzzzzzzzzzzzzzzz.tmp").unlink()
    (empty / ".config.json.sds-00000000ffffffff.tmp").write_bytes(b"")  # a killed start: still empty
    start_run("x", empty, "draft", overrides(1), NAMES, "cpu", [], catalog).run()
    assert not (empty / ".config.json.sds-00000000ffffffff.tmp").exists()


def test_a_temp_looking_file_of_another_user_is_foreign_and_kept(tmp_path, catalog) -> None:
    out = tmp_path / "shared"
    out.mkdir()
    theirs = out / ".config.json.sds-0123456789abcdef.tmp"
    theirs.write_bytes(b"someone else's")
    os.chown(theirs, 12345, 12345)
    with pytest.raises(ConfigError, match="is not empty"):
        start_run("x", out, "draft", overrides(1), NAMES, "cpu", [], catalog)
    assert theirs.read_bytes() == b"someone else's"


def test_resume_with_fewer_steps_than_done_is_refused_and_writes_nothing(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog, steps=4)
    before = folder.config_path.read_bytes()
    with pytest.raises(ConfigError, match="--steps 2 is fewer than the 4 steps"):
        resume_run(folder.root, "cpu", catalog=catalog, steps=2)
    resume_run(folder.root, "cpu", catalog=catalog, steps=4)  # the same length: nothing to rewrite
    assert folder.config_path.read_bytes() == before


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lr", float("nan"), "optim.lr must be a finite number"),
        ("lr", float("inf"), "optim.lr must be a finite number"),
        ("lr", -1, "optim.lr must be greater than 0"),
        ("lr", 0, "optim.lr must be greater than 0"),
        ("betas", [2, 2], r"optim.betas must both lie in \[0, 1\)"),
        ("betas", [0.9, 1.0], r"optim.betas must both lie in \[0, 1\)"),
        ("eps", 0, "optim.eps must be greater than 0"),
        ("weight_decay", -0.1, "optim.weight_decay must not be negative"),
    ],
)
def test_bad_optimiser_values_are_refused_before_anything_is_built(tmp_path, catalog, key, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        start_run("x", tmp_path / "run", "draft", {"optim": {key: value}}, NAMES, "cpu", [], catalog)
    assert not (tmp_path / "run").exists()


def test_non_finite_whole_numbers_and_non_utf8_config_files_are_refused(tmp_path, catalog) -> None:
    with pytest.raises(ConfigError, match=r"run\.steps must be a whole number"):
        start_run("x", tmp_path / "run", "draft", {"run": {"steps": float("nan")}}, NAMES, "cpu", [], catalog)
    config = tmp_path / "bad.json"
    config.write_bytes(b'\xff\xfe{"run": {}}')
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config_file(config)


def test_a_planted_lock_symlink_is_not_followed(tmp_path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".sds.lock").symlink_to(victim)
    with pytest.raises(SdsError, match="is not a lock file sds made"):
        RunLock(tmp_path / "run").acquire()
    assert victim.read_text() == "precious"
