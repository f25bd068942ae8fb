"""The run folder (docs/design.md): config.json, metrics.jsonl, ckpts/, previews/, final/.

Every file here is read and written relative to the folder without following links
(`sds_core.files`): a run folder may sit on a shared disk where others can plant links.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sds_core.errors import ConfigError, SdsError
from sds_core.files import (
    LOCK_NAME,
    RunLock,
    UnsafePath,
    WriteFailed,
    atomic_write,
    folder_fd,
    is_temp_file,
    open_regular,
    read_regular,
    remove_stale_temps,
    temp_name,
)
from sds_core.limits import MAX_CONFIG_DEPTH, nesting_depth

# Written last into a staged final/ before it is renamed into place: a final/ without it is the
# partial export of an older version, rebuilt by `sds resume` and `sds batch`.
FINISHED_MARK = ".sds-finished"
FOLDERS = ("ckpts", "previews", "final")


def parse_json(text: str, source: Path) -> Any:
    """JSON from a file someone else may have written: bad syntax or absurd nesting is an SdsError."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SdsError(f"{source} cannot be read as JSON ({exc})") from None
    except RecursionError:
        data = None
    if data is None or nesting_depth(data) > MAX_CONFIG_DEPTH:
        raise SdsError(f"{source} is nested deeper than {MAX_CONFIG_DEPTH} levels; it is not an sds file")
    return data


def check_record(data: Any, source: Path) -> dict[str, Any]:
    """A run record (config.json, or what a checkpoint holds to rebuild it) with the keys the loop reads."""
    if not (
        isinstance(data, dict)
        and isinstance(data.get("prompt"), str)
        and isinstance(data.get("config"), dict)
        and isinstance(data["config"].get("run"), dict)
        and isinstance(data.get("preset", ""), str)
    ):
        raise SdsError(f"{source} holds no sds run record (a prompt and a config with a run section)")
    return data


def _kind(path: Path) -> int | None:
    """The lstat mode of `path`, None when there is nothing there."""
    try:
        return path.lstat().st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise ConfigError(f"the folder name {str(path)[:80]}... is too long for this file system") from None
        if exc.errno == errno.ENOTDIR:
            return None
        raise SdsError(f"cannot read {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def ckpt_dir(self) -> Path:
        return self.root / "ckpts"

    @property
    def last_checkpoint(self) -> Path:
        return self.ckpt_dir / "last.pt"

    @property
    def previews(self) -> Path:
        return self.root / "previews"

    @property
    def final(self) -> Path:
        return self.root / "final"

    def step_checkpoint(self, step: int) -> Path:
        return self.ckpt_dir / f"step-{step:06d}.pt"

    def write_config(self, record: dict[str, Any]) -> None:
        text = json.dumps(record, indent=2, sort_keys=False, default=str) + "\n"
        atomic_write(self.config_path, text.encode("utf-8"), root=self.root)

    def read_config(self) -> dict[str, Any]:
        """config.json, checked for the keys the loop reads (a user error when it lacks them)."""
        try:
            text = read_regular(self.config_path, self.root).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SdsError(f"{self.config_path} cannot be read as JSON ({exc})") from None
        return check_record(parse_json(text, self.config_path), self.config_path)

    def has_config(self) -> bool:
        """True when config.json is there (as anything: a planted link is refused when read)."""
        return _kind(self.config_path) is not None

    def has_checkpoint(self) -> bool:
        return _kind(self.last_checkpoint) is not None

    def foreign_entries(self) -> list[str]:
        """What the folder holds besides the run lock and temporary files a killed writer left."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.name != LOCK_NAME and not is_temp_file(p))

    def check_layout(self) -> None:
        """Refuse a run folder whose own folders or files are links, files or special files."""
        for name in FOLDERS:
            mode = _kind(self.root / name)
            if mode is not None and not stat.S_ISDIR(mode):
                what = "a symbolic link" if stat.S_ISLNK(mode) else "not a folder"
                raise UnsafePath(
                    f"{self.root / name} is {what}; sds writes there only into a folder of its own: "
                    "remove it and run again"
                )
        for path in (self.config_path, self.metrics_path, self.last_checkpoint):
            mode = _kind(path)
            if mode is not None and not stat.S_ISREG(mode):
                what = "a symbolic link" if stat.S_ISLNK(mode) else "not a plain file"
                raise UnsafePath(f"{path} is {what}; sds reads run files only as plain files: remove it and run again")

    def check_new(self) -> None:
        """Refuse a folder a new run must not write into: a file, a run, or anything not a run."""
        out = self.root
        mode = _kind(out)
        if mode is not None and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a folder; pick a new or empty folder")
        if mode is None:
            return
        if self.has_config():
            raise ConfigError(f"{out} already holds a run; continue it with `sds resume {out}` or pick another --out")
        if self.has_checkpoint():
            raise ConfigError(
                f"{out} holds a run checkpoint but no config.json; restore and continue it with "
                f"`sds resume {out}` or pick another --out"
            )
        entries = self.foreign_entries()
        if entries:
            shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
            raise ConfigError(f"--out {out} is not empty and holds no sds run ({shown}); pick a new or empty folder")

    def lock(self) -> RunLock:
        """Take the folder's run lock (creating the folder), then delete stale temporary files
        (this user's, in the folders the toolkit writes)."""
        lock = RunLock(self.root).acquire()
        remove_stale_temps(self.root, ("", *FOLDERS))
        return lock

    def _metric_lines(self) -> list[tuple[str, dict[str, Any]]]:
        """metrics.jsonl's lines that are step records (a line cut short by a crash, or anything
        that is not a JSON object with an integer step, is skipped)."""
        if _kind(self.metrics_path) is None:
            return []
        try:
            text = read_regular(self.metrics_path, self.root).decode("utf-8", errors="replace")
        except OSError as exc:
            raise SdsError(f"{self.metrics_path} cannot be read: {exc.strerror}") from None
        lines = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                lines.append((line, record))
        return lines

    def truncate_metrics(self, done_steps: int) -> None:
        """Drop metric lines of steps after `done_steps` (they are redone after a resume)."""
        if _kind(self.metrics_path) is None:
            return
        kept = [line for line, record in self._metric_lines() if record["step"] <= done_steps]
        atomic_write(self.metrics_path, ("\n".join(kept) + "\n" if kept else "").encode("utf-8"), root=self.root)

    def read_metrics(self) -> list[dict[str, Any]]:
        return [record for _, record in self._metric_lines()]

    def open_metrics(self) -> BinaryIO:
        """metrics.jsonl opened for appending (created if missing), never through a link."""
        return os.fdopen(open_regular(self.metrics_path, self.root, write=True), "ab")

    # --- final/: complete or absent ------------------------------------------------------

    def final_complete(self) -> bool:
        """True when final/ is a folder that a finished export renamed into place."""
        mode = _kind(self.final)
        if mode is None or not stat.S_ISDIR(mode):
            return False
        try:
            mark = parse_json(read_regular(self.final / FINISHED_MARK, self.root).decode("utf-8"), self.final)
        except (OSError, SdsError, UnicodeDecodeError):
            return False
        return isinstance(mark, dict) and isinstance(mark.get("step"), int)

    def write_final(self, write: Callable[[Path], list[Path]], step: int) -> list[Path]:
        """Write final/ through `write(folder)` into a staged folder beside it, then rename that
        into place: final/ is complete or absent, never partial. Files of the previous final/
        that this export does not rewrite (another --format) are carried over."""
        self.check_layout()
        with folder_fd(self.root) as fd:
            stage = temp_name("final")
            os.mkdir(stage, 0o777, dir_fd=fd)
            staged = self.root / stage
            old: str | None = None
            try:
                written = [Path(p).relative_to(staged) for p in write(staged)]
                carried = self._carry_over(fd, stage, {p.parts[0] for p in written})
                mark = {"step": int(step), "files": sorted(str(p) for p in written) + carried}
                atomic_write(staged / FINISHED_MARK, (json.dumps(mark) + "\n").encode("utf-8"), root=self.root)
                if _kind(self.final) is not None:
                    old = temp_name("final-old")
                    os.rename("final", old, src_dir_fd=fd, dst_dir_fd=fd)
                os.rename(stage, "final", src_dir_fd=fd, dst_dir_fd=fd)
            except WriteFailed as exc:
                raise WriteFailed(f"{exc}; {self.final} was left as it was", exc.path) from None
            except OSError as exc:
                raise WriteFailed(
                    f"cannot write {self.final}: {exc.strerror}; it was left as it was", self.final
                ) from None
            finally:
                if os.path.lexists(staged):
                    shutil.rmtree(staged, ignore_errors=True)  # rmtree never follows the links inside
            if old is not None:
                shutil.rmtree(self.root / old, ignore_errors=True)
        return [self.final / p for p in written]

    def _carry_over(self, fd: int, stage: str, rewritten: set[str]) -> list[str]:
        """Hard-link the previous final/'s plain files that this export did not write into the
        staged folder (links and special files planted there are dropped)."""
        if _kind(self.final) is None:
            return []
        carried = []
        for entry in sorted(os.listdir(self.final)):
            if entry in rewritten or entry == FINISHED_MARK or is_temp_file(self.final / entry):
                continue
            if not stat.S_ISREG(os.stat(self.final / entry, follow_symlinks=False).st_mode):
                continue
            try:
                os.link(f"final/{entry}", f"{stage}/{entry}", src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # not ours to link (another user's file): left out of the new final/
            carried.append(entry)
        return carried
