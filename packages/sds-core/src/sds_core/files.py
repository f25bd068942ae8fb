"""Atomic file writes that honour the umask, their temporary-file names, and the run lock.

Every file the toolkit writes (config.json, checkpoints, previews, final/, batch and eval JSON,
the embedding and reference caches) goes through `atomic_write`: a temporary file beside the
target, fsync, then a rename over it. `tempfile.mkstemp` creates its file with mode 0600, which
would make every result unreadable to the rest of a shared cluster, so the temporary file is
given the mode a plain `open()` would have (0666 less the umask) before it is renamed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from sds_core.errors import RunFolderBusy, SdsError

LOCK_NAME = ".sds.lock"
# `.<target name>.<random>.tmp`, optionally followed by the target's suffix (some writers, ffmpeg
# for one, pick the format from the file name).
_TEMP_NAME = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")


def _umask() -> int:
    """The process umask: from /proc on Linux, else by setting it and setting it back."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes | Callable[[Path], None], keep_suffix: bool = False) -> Path:
    """Write `data` (bytes, or a function that writes the file at the path it is given) to `path`
    through a temporary file in the same folder, then rename it over `path`.

    keep_suffix: the temporary file ends with `path`'s suffix (for writers that read it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + (path.suffix if keep_suffix else "")
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        if isinstance(data, bytes):
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            os.close(fd)
            data(tmp)
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def is_temp_file(path: Path) -> bool:
    """True for a temporary file left by `atomic_write` (a process killed while writing)."""
    return bool(_TEMP_NAME.match(path.name)) and path.is_file()


def remove_stale_temps(root: Path) -> list[Path]:
    """Delete the temporary files under `root` that a killed writer left. Call it holding the lock."""
    removed = []
    for path in Path(root).rglob(".*"):
        if is_temp_file(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class RunLock:
    """An exclusive OS lock (flock) on `<folder>/.sds.lock`, held until `release()` or the end of
    the process: the kernel drops it when the process dies, even by SIGKILL, so a crash never
    leaves a folder locked. The lock file itself stays (unlinking it would let two processes lock
    two different files of the same name)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)  # no symlink games
        except OSError as exc:
            raise SdsError(f"cannot write to the run folder {self.folder}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise SdsError(f"cannot lock the run folder {self.folder}: {exc.strerror or exc}") from None
            holder = self._holder()
            raise RunFolderBusy(
                f"{self.folder} is in use by another sds process{holder}; wait for it to finish or pick another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _holder(self) -> str:
        try:
            pid = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return ""
        return f" (pid {pid})" if pid.isdigit() else ""

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __del__(self) -> None:
        self.release()
