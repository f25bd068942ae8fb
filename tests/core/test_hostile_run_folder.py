"""Run folders on a shared disk, tried as a hostile user would: links planted where the run's own
folders and files belong, hard-linked and special lock files, FIFOs, an interrupted or failed
export, a full disk, and checkpoints or metrics of plain data but the wrong shape. Each is one
sentence, nothing is written outside the run folder, and nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sds_core.errors import ConfigError, RunInterrupted, SdsError
from sds_core.files import RunLock, UnsafePath, atomic_write
from sds_core.lifecycle import is_finished, load_run, resume_run, start_run
from sds_core.plugins import PluginSpec, load_catalog
from sds_core.run import FINISHED_MARK, RunFolder
from tests.conftest import TargetConfig, TargetPlugin

NAMES = {"generator": "image", "guidance": "target"}


def overrides(steps: int) -> dict:
    return {"run": {"steps": steps, "preview_every": 2, "checkpoint_every": 2}, "cameras": {"width": 8}}


def finished_run(tmp_path: Path, catalog, steps: int = 4, name: str = "run") -> RunFolder:
    start_run("x", tmp_path / name, "draft", overrides(steps), NAMES, "cpu", [], catalog).run()
    return RunFolder(tmp_path / name)


def outside(tmp_path: Path) -> Path:
    """A folder of someone else's, with a file a redirected write would overwrite."""
    folder = tmp_path / "public_html"
    folder.mkdir()
    (folder / "index.html").write_text("precious")
    (folder / "image.png").write_text("precious")
    return folder


def untouched(folder: Path) -> bool:
    return sorted(p.name for p in folder.iterdir()) == ["image.png", "index.html"] and all(
        p.read_text() == "precious" for p in folder.iterdir()
    )


def within(seconds: float, call: Callable[[], object]) -> BaseException | None:
    """Run `call` in a thread; fail the test if it is still blocked after `seconds` (a FIFO)."""
    box: list[BaseException | None] = [None]

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box[0] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the call blocked"
    return box[0]


# --- 1. links where the run's folders and files belong -------------------------------------


def test_a_final_folder_replaced_by_a_link_is_refused_and_the_outside_is_untouched(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog)
    target = outside(tmp_path)
    for path in folder.final.iterdir():
        path.unlink()
    folder.final.rmdir()
    folder.final.symlink_to(target)  # rm -r R/final && ln -s ~/public_html R/final
    with pytest.raises(UnsafePath, match=r"final is a symbolic link"):
        load_run(folder.root, "cpu", catalog, lock=True).export()
    with pytest.raises(UnsafePath, match=r"final is a symbolic link"):
        resume_run(folder.root, "cpu", catalog=catalog)
    assert untouched(target) and folder.final.is_symlink()


@pytest.mark.parametrize("name", ["ckpts", "previews"])
def test_a_run_folder_of_links_is_refused_before_anything_is_written(tmp_path, catalog, name) -> None:
    folder = finished_run(tmp_path, catalog, steps=2)
    target = outside(tmp_path)
    if name == "ckpts":  # the attacker keeps the run resumable: the checkpoint sits in their folder
        (target / "last.pt").write_bytes(folder.last_checkpoint.read_bytes())
    moved = folder.root / name
    for path in moved.iterdir():
        path.unlink()
    moved.rmdir()
    moved.symlink_to(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(UnsafePath, match=rf"{name} is a symbolic link"):
        resume_run(folder.root, "cpu", catalog=catalog, steps=4).run()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before


def test_a_metrics_file_planted_as_a_dangling_link_is_not_followed(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog, steps=2)
    victim = tmp_path / "victim.log"
    folder.metrics_path.unlink()
    folder.metrics_path.symlink_to(victim)  # dangling: an append through it would create it
    with pytest.raises(UnsafePath, match=r"metrics\.jsonl is a symbolic link"):
        resume_run(folder.root, "cpu", catalog=catalog, steps=4).run()
    assert not victim.exists()


def test_an_atomic_write_into_a_run_folder_never_goes_through_a_link(tmp_path) -> None:
    root = tmp_path / "run"
    root.mkdir()
    target = outside(tmp_path)
    (root / "final").symlink_to(target)
    with pytest.raises(UnsafePath, match="is a symbolic link, not a folder"):
        atomic_write(root / "final" / "index.html", b"owned", root=root)
    (root / "config.json").symlink_to(target / "index.html")
    with pytest.raises(UnsafePath, match="is a symbolic link, not a plain file"):
        atomic_write(root / "config.json", b"owned", root=root)
    assert untouched(target)
    atomic_write(root / "ckpts" / "a.bin", b"fine", root=root)  # missing folders are made, as folders
    assert (root / "ckpts" / "a.bin").read_bytes() == b"fine" and not (root / "ckpts").is_symlink()


def test_files_planted_where_the_run_folders_belong_are_refused_before_training(tmp_path, catalog) -> None:
    for name in ("ckpts", "final"):
        folder = finished_run(tmp_path, catalog, steps=2, name=f"run-{name}")
        for path in (folder.root / name).iterdir():
            path.unlink()
        (folder.root / name).rmdir()
        (folder.root / name).write_text("a file")
        before = folder.metrics_path.read_bytes()
        with pytest.raises(UnsafePath, match=rf"{name} is not a folder"):
            resume_run(folder.root, "cpu", catalog=catalog, steps=4)
        assert folder.metrics_path.read_bytes() == before  # nothing trained, nothing rewritten


# --- 3. the run lock -------------------------------------------------------------------------


def test_a_lock_file_hard_linked_to_a_users_file_is_refused_and_not_truncated(tmp_path) -> None:
    victim = tmp_path / "bashrc"
    victim.write_text("precious")
    (tmp_path / "run").mkdir()
    os.link(victim, tmp_path / "run" / ".sds.lock")
    with pytest.raises(UnsafePath, match="is not a lock file of yours"):
        RunLock(tmp_path / "run").acquire()
    assert victim.read_text() == "precious"


def test_a_lock_file_of_another_user_or_with_foreign_content_is_refused(tmp_path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / ".sds.lock").write_text("123\n")
    os.chown(theirs / ".sds.lock", 12345, 12345)
    with pytest.raises(UnsafePath, match="another user's"):
        RunLock(theirs).acquire()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / ".sds.lock").write_text("my notes, not a pid")
    with pytest.raises(UnsafePath, match="holds something other than a process id"):
        RunLock(mine).acquire()
    assert (mine / ".sds.lock").read_text() == "my notes, not a pid"
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / ".sds.lock")
    error = within(10, lambda: RunLock(fifo).acquire())
    assert isinstance(error, UnsafePath)


# --- 4. final/ complete or absent ------------------------------------------------------------


def failing_export(trainer_or_run, after_files: int, action: Callable[[], None]) -> None:
    """Make the generator's export write `after_files` real files, then call `action`."""
    original = trainer_or_run.generator.export

    def export(out_dir, context):
        written = original(out_dir, context)[:after_files]
        action()
        return written

    trainer_or_run.generator.export = export


def test_a_failed_export_leaves_no_final_folder_and_resume_writes_it(tmp_path, catalog) -> None:
    trainer = start_run("x", tmp_path / "run", "draft", overrides(4), NAMES, "cpu", [], catalog)

    def boom() -> None:
        raise SdsError("the exporter failed")

    failing_export(trainer, 1, boom)
    with pytest.raises(SdsError, match="the exporter failed"):
        trainer.run()
    folder = RunFolder(tmp_path / "run")
    assert not folder.final.exists() and not is_finished(folder.root)
    assert [p.name for p in folder.root.iterdir() if p.name.startswith(".final")] == []
    resumed = resume_run(folder.root, "cpu", catalog=catalog)
    assert resumed.step == 4
    assert resumed.run() == [folder.final / "image.png"] and is_finished(folder.root)


def test_sigterm_while_exporting_is_one_sentence_and_leaves_a_resumable_run(tmp_path, catalog) -> None:
    trainer = start_run("x", tmp_path / "run", "draft", overrides(4), NAMES, "cpu", [], catalog)
    failing_export(trainer, 1, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(RunInterrupted, match=r"interrupted while writing final/; the checkpoint of step 4 is intact"):
        trainer.run()
    folder = RunFolder(tmp_path / "run")
    assert not folder.final.exists() and not is_finished(folder.root)
    resume_run(folder.root, "cpu", catalog=catalog).run()
    assert is_finished(folder.root)


def test_a_partial_final_folder_of_an_older_version_is_rebuilt(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog)
    (folder.final / FINISHED_MARK).unlink()
    (folder.final / "image.png").unlink()  # what an interrupted export of an older version left
    assert not is_finished(folder.root)
    resume_run(folder.root, "cpu", catalog=catalog).run()
    assert is_finished(folder.root) and (folder.final / "image.png").stat().st_size > 0


def test_an_export_of_some_formats_keeps_the_others(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog)
    (folder.final / "notes.txt").write_text("kept")
    run = load_run(folder.root, "cpu", catalog, lock=True)
    try:
        assert run.export() == [folder.final / "image.png"]
    finally:
        run.release()
    assert (folder.final / "notes.txt").read_text() == "kept" and folder.final_complete()


# --- 5. a full disk --------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 2 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_one_sentence_naming_what_is_intact(tiny_disk, catalog) -> None:
    out = tiny_disk / "run"
    state = {}

    def listener(event) -> None:
        if getattr(event, "step", None) == 3 and "filler" not in state:
            state["filler"] = fill(tiny_disk)

    trainer = start_run("x", out, "draft", overrides(6), NAMES, "cpu", [listener], catalog)
    with pytest.raises(SdsError) as caught:
        trainer.run()
    message = str(caught.value)
    assert "no space left" in message and "the checkpoint of step 2 is intact" in message
    assert f"sds resume {out}" in message and "\n" not in message
    assert torch.load(out / "ckpts" / "last.pt", weights_only=True)["step"] == 2
    state["filler"].unlink()
    resume_run(out, "cpu", catalog=catalog).run()
    assert is_finished(out)


# --- 8. FIFOs --------------------------------------------------------------------------------


def test_fifos_planted_as_run_files_never_block(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog)
    folder.last_checkpoint.unlink()
    os.mkfifo(folder.last_checkpoint)
    error = within(10, lambda: resume_run(folder.root, "cpu", catalog=catalog))
    assert isinstance(error, UnsafePath) and "is not a plain file" in str(error)
    error = within(10, lambda: is_finished(folder.root))
    assert isinstance(error, UnsafePath)
    other = finished_run(tmp_path, catalog, name="other")
    other.config_path.unlink()
    os.mkfifo(other.config_path)
    error = within(10, other.read_config)
    assert isinstance(error, SdsError) and not isinstance(error, OSError)


# --- 11. plain data of the wrong shape -------------------------------------------------------


def test_checkpoints_of_plain_data_but_the_wrong_shape_are_one_sentence(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog)
    payload = torch.load(folder.last_checkpoint, weights_only=True)
    rng = payload["rng"]
    for broken in (
        {**payload, "rng": {**rng, "numpy": {**rng["numpy"], "keys": [1, 2, 3]}}},  # AttributeError before
        {**payload, "generator": {"param": [1, 2, 3]}},
        {**payload, "optimizer": {"state": 3, "param_groups": "x"}},
    ):
        torch.save(broken, folder.last_checkpoint)
        with pytest.raises(SdsError):
            resume_run(folder.root, "cpu", catalog=catalog)


def test_a_negative_checkpoint_step_is_refused_and_the_metrics_are_kept(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog)
    payload = torch.load(folder.last_checkpoint, weights_only=True)
    torch.save({**payload, "step": -5}, folder.last_checkpoint)
    metrics = folder.metrics_path.read_bytes()
    with pytest.raises(SdsError, match="negative step"):
        resume_run(folder.root, "cpu", catalog=catalog)
    assert folder.metrics_path.read_bytes() == metrics


def test_metric_lines_that_are_not_step_records_are_skipped(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog, steps=2)
    with folder.metrics_path.open("a") as handle:
        handle.write('[1, 2]\n"text"\n{"step": "two"}\n' + "[" * 100000 + "\n")
    assert [m["step"] for m in folder.read_metrics()] == [1, 2]
    resume_run(folder.root, "cpu", catalog=catalog, steps=3).run()
    assert [m["step"] for m in folder.read_metrics()] == [1, 2, 3]


def test_a_deeply_nested_config_json_is_one_sentence(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog, steps=2)
    folder.config_path.write_text('{"prompt": "x", "config": {"run": {"a": ' + "[" * 100000 + "]" * 100000 + "}}}")
    with pytest.raises(SdsError, match="nested deeper than"):
        resume_run(folder.root, "cpu", catalog=catalog)


def test_an_out_name_too_long_for_the_file_system_is_one_sentence(tmp_path, catalog) -> None:
    with pytest.raises(ConfigError, match="too long for this file system"):
        start_run("x", tmp_path / ("a" * 300), "draft", overrides(2), NAMES, "cpu", [], catalog)


# --- 12. a refused run leaves nothing behind -------------------------------------------------


class _Unbuildable:
    def __init__(self, config: TargetConfig, context: object = None) -> None:
        raise SdsError("the weights of this prior are not on disk")


class _UnbuildablePlugin:
    from sds_core.hookspecs import hookimpl

    @hookimpl
    def sds_register_guidance(self, registry):
        registry.add(PluginSpec("unbuildable", _Unbuildable, TargetConfig, "A prior that cannot be built."))


def test_a_refused_run_leaves_no_folder_and_no_lock(tmp_path) -> None:
    catalog = load_catalog(
        extra_plugins={
            "target-plugin": (TargetPlugin(), "sds-tests", "0"),
            "unbuildable": (_UnbuildablePlugin(), "sds-tests", "0"),
        }
    )
    names = {"generator": "image", "guidance": "unbuildable"}
    with pytest.raises(SdsError, match="not on disk"):
        start_run("x", tmp_path / "a" / "b" / "run", "draft", overrides(2), names, "cpu", [], catalog)
    assert not (tmp_path / "a").exists()
    empty = tmp_path / "empty"
    empty.mkdir()  # the user's own empty folder stays, without a lock file
    with pytest.raises(SdsError, match="not on disk"):
        start_run("x", empty, "draft", overrides(2), names, "cpu", [], catalog)
    assert empty.is_dir() and list(empty.iterdir()) == []


def test_sigterm_during_sds_export_keeps_the_previous_final_folder(tmp_path, catalog) -> None:
    folder = finished_run(tmp_path, catalog)
    before = (folder.final / "image.png").read_bytes()
    run = load_run(folder.root, "cpu", catalog, lock=True)
    failing_export(run, 1, lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        with pytest.raises(RunInterrupted, match=r"interrupted while writing .*final; it was left as it was"):
            run.export()
    finally:
        run.release()
    assert (folder.final / "image.png").read_bytes() == before and is_finished(folder.root)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
