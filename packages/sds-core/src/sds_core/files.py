"""Files in folders other people can write: atomic writes, plain-file reads and the run lock.

Run folders live on shared disks, so every path inside one is treated as possibly planted:
- `atomic_write(path, data, root=RUN)` opens each folder from RUN down to the file's own with
  `O_DIRECTORY | O_NOFOLLOW` (creating the missing ones), writes a temporary file beside the
  target through that open folder, fsyncs it and renames it over the target. A link, a file or a
  special file where a folder or a run file belongs is refused in one sentence (`UnsafePath`) and
  nothing is written, so `rm -r R/final && ln -s ~/public_html R/final` cannot redirect a write.
- `open_regular(path, root=RUN)` opens a file the same way and only if it is a regular file
  (`S_ISREG`, opened non-blocking so that a FIFO planted as `ckpts/last.pt` cannot hang a reader).
- The temporary files are named `.<name>.sds-<random>.tmp[<suffix>]`, created with the mode a plain
  `open()` would give (0666 less the umask: results stay readable on a shared cluster), and only
  the toolkit's own folders are cleaned of them, only of the caller's own files.
- An `OSError` while writing (disk full, quota, a read-only disk) is one sentence naming the path
  (`WriteFailed`); the callers add what is intact.

The standard library has the pieces (`os.open` with `dir_fd`, `os.replace` with `src_dir_fd`) but
no maintained library combines them into a link-proof atomic write, hence this module.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sds_core.errors import RunFolderBusy, SdsError

LOCK_NAME = ".sds.lock"
# `.<target name>.sds-<16 hex>.tmp`, optionally followed by the target's suffix (some writers,
# ffmpeg for one, pick the format from the file name); staged folders (final/) end the same way.
_TEMP_NAME = re.compile(r"^\..+\.sds-[0-9a-f]{16}\.tmp(\.[A-Za-z0-9]+)?$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class UnsafePath(SdsError):
    """A link, file or special file where a run folder's own folder or file belongs."""


class WriteFailed(SdsError):
    """Writing a file failed (disk full, quota, permissions); `path` names it."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def write_failure(path: Path, exc: BaseException) -> WriteFailed:
    """The one sentence for an error raised while writing `path`."""
    code = getattr(exc, "errno", None)
    if code in _NO_SPACE:
        return WriteFailed(f"no space left (disk full or quota) on {Path(path).parent} while writing {path}", path)
    reason = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:200] or type(exc).__name__
    return WriteFailed(f"cannot write {path}: {reason}", path)


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


def temp_name(name: str, suffix: str = "") -> str:
    """A fresh temporary name for `name` (`.<name>.sds-<random>.tmp<suffix>`)."""
    return f".{name}.sds-{secrets.token_hex(8)}.tmp{suffix}"


def _describe(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device or special file"


def _refuse_dir(path: Path, fd: int, name: str) -> UnsafePath:
    try:
        what = _describe(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        what = "not a folder"
    return UnsafePath(
        f"{path} is {what}, not a folder; sds does not write or read run files through links or "
        "special files: remove it and run again"
    )


def _relative(root: Path, path: Path) -> tuple[str, ...]:
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        raise ValueError(f"{path} is not inside {root}") from None
    if ".." in parts:
        raise ValueError(f"{path} leaves {root}")
    return parts


def _anchor(path: Path, root: Path | None) -> tuple[Path, tuple[str, ...]]:
    """Where `path`'s folder is opened from: `root` and the parts below it, or the folder itself
    (the caller's, followed as named) without a root."""
    if root is None:
        return path.parent, ()
    return Path(root), _relative(Path(root), path.parent)


def open_folder(root: Path, parts: tuple[str, ...] = (), create: bool = True) -> int:
    """A descriptor of ROOT/PARTS, each part opened without following links (created if missing
    when `create`). ROOT itself is the caller's: a link there is followed. Close it with os.close."""
    root = Path(root)
    if create:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_failure(root, exc) from None
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT and not create:
            raise
        if exc.errno == errno.ENOTDIR:
            raise UnsafePath(f"{root} is not a folder") from None
        raise SdsError(f"cannot open the folder {root}: {exc.strerror}") from None
    here = root
    for part in parts:
        here = here / part
        try:
            if create:
                with suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            error: SdsError
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                error = _refuse_dir(here, fd, part)
            elif exc.errno == errno.ENOENT:
                os.close(fd)
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(here)) from None
            else:
                error = write_failure(here, exc) if create else SdsError(f"cannot open {here}: {exc.strerror}")
            os.close(fd)
            raise error from None
        os.close(fd)
        fd = child
    return fd


@contextmanager
def folder_fd(root: Path, parts: tuple[str, ...] = (), create: bool = True) -> Iterator[int]:
    fd = open_folder(root, parts, create)
    try:
        yield fd
    finally:
        os.close(fd)


def _check_target(fd: int, name: str, path: Path) -> None:
    """Refuse to replace anything but a regular file (a link is replaced, never followed, by the
    rename, but a link or special file where a run file belongs means someone planted it)."""
    try:
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise UnsafePath(
            f"{path} is {_describe(mode)}, not a plain file; sds does not write through links or over "
            "special files: remove it and run again"
        )


def atomic_write(
    path: Path, data: bytes | Callable[[Path], None], keep_suffix: bool = False, root: Path | None = None
) -> Path:
    """Write `data` (bytes, or a function that writes the file at the path it is given) to `path`
    through a temporary file in the same folder, then rename it over `path`.

    root: the folder the toolkit owns (a run folder): every folder from it to `path` is opened
    without following links and `path` must be a plain file or absent. Without it, `path`'s folder
    is the caller's (a `--json` target) and is created and followed as named.
    keep_suffix: the temporary file ends with `path`'s suffix (for writers that read it)."""
    path = Path(path)
    fd = open_folder(*_anchor(path, root), create=True)
    tmp = temp_name(path.name, path.suffix if keep_suffix else "")
    created = False
    try:
        if root is not None:
            _check_target(fd, path.name, path)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=fd)
        created = True
        if isinstance(data, bytes):
            with os.fdopen(out, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            os.close(out)
            folder = path.parent
            # resolve and compare: the folder the writer reaches by name is the one held open
            named, held = os.stat(folder), os.fstat(fd)
            if (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
                raise UnsafePath(f"{folder} changed while sds was writing {path.name}; nothing was written")
            try:
                data(folder / tmp)
            except RuntimeError as exc:  # torch's zip writer reports a full disk as "unexpected pos"
                if os.fstatvfs(fd).f_bavail == 0 or "unexpected pos" in str(exc):
                    raise OSError(errno.ENOSPC, "no space left on device") from None
                raise
            synced = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            try:
                os.fsync(synced)
            finally:
                os.close(synced)
        os.replace(tmp, path.name, src_dir_fd=fd, dst_dir_fd=fd)
        created = False
    except OSError as exc:
        raise write_failure(path, exc) from None
    finally:
        if created:
            with suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
        os.close(fd)
    return path


def open_regular(path: Path, root: Path | None = None, write: bool = False) -> int:
    """A descriptor of `path`, opened only if it is a regular file: a FIFO, device or folder is
    refused without blocking, and with `root` (a run folder) so is a link anywhere below it.
    write: open for appending, creating the file (mode 0666 less the umask) when missing."""
    path = Path(path)
    fd = open_folder(*_anchor(path, root), create=write)
    flags = os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if root is not None else 0)
    flags |= (os.O_WRONLY | os.O_APPEND | os.O_CREAT) if write else os.O_RDONLY
    try:
        try:
            handle = os.open(path.name, flags, 0o666, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(
                    f"{path} is a symbolic link; sds reads and writes run files only as plain files: "
                    "remove it and run again"
                ) from None
            if exc.errno in (errno.ENXIO, errno.EISDIR):  # a FIFO with no writer, or a folder
                mode = os.stat(path.name, dir_fd=fd, follow_symlinks=False).st_mode
                raise UnsafePath(f"{path} is {_describe(mode)}, not a plain file; remove it and run again") from None
            raise
    finally:
        os.close(fd)
    mode = os.fstat(handle).st_mode
    if not stat.S_ISREG(mode):
        os.close(handle)
        raise UnsafePath(f"{path} is {_describe(mode)}, not a plain file; remove it and run again")
    os.set_blocking(handle, True)
    return handle


def read_regular(path: Path, root: Path | None = None) -> bytes:
    """The bytes of a regular file (`open_regular`); a missing or unreadable file is an OSError."""
    fd = open_regular(path, root)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def is_temp_file(path: Path) -> bool:
    """True for a temporary file or staged folder of this user's, left by a killed writer."""
    if not _TEMP_NAME.match(path.name):
        return False
    try:
        info = path.lstat()
    except OSError:
        return False
    kind_ok = stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)
    return kind_ok and info.st_uid == os.geteuid()


def remove_stale_temps(root: Path, folders: tuple[str, ...] = ("",)) -> list[Path]:
    """Delete this user's temporary files (and staged folders) that a killed writer left in the
    named folders of `root` (not below them). Call it holding the lock."""
    removed = []
    for name in folders:
        folder = Path(root) / name if name else Path(root)
        try:
            if folder.is_symlink() or not folder.is_dir():
                continue
            entries = list(folder.iterdir())
        except OSError:
            continue
        for path in entries:
            if not is_temp_file(path):
                continue
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)  # never follows the links inside
                else:
                    path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed


_PID_LINE = re.compile(rb"^\d{0,20}\n?$")


class RunLock:
    """An exclusive OS lock (flock) on `<folder>/.sds.lock`, held until `release()` or the end of
    the process: the kernel drops it when the process dies, even by SIGKILL, so a crash never
    leaves a folder locked. The lock file stays while the folder holds a run (unlinking it could
    let two processes lock two different files of the same name; `discard` removes it only while
    holding it, and a taker checks that the file it locked is still the one of that name).

    The lock file must be a regular file with one link, owned by the caller: anything else (a hard
    link to someone's file, a FIFO, another user's lock) is refused, and an existing file is
    rewritten only when it holds nothing but a process id (the lock's own content)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._made: list[Path] = []  # the folders this lock created, innermost first

    def _make_folder(self) -> None:
        missing = []
        here = self.folder
        while not os.path.lexists(here):
            missing.append(here)
            if here.parent == here:
                break
            here = here.parent
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SdsError(f"cannot write to the run folder {self.folder}: {exc.strerror or exc}") from None
        self._made = missing

    def _open(self) -> tuple[int, bool]:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            try:
                return os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o666), True
            except FileExistsError:
                return os.open(self.path, flags), False
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise UnsafePath(
                    f"{self.path} is not a lock file sds made (a link, folder or special file); remove it and run again"
                ) from None
            raise SdsError(f"cannot write to the run folder {self.folder}: {exc.strerror or exc}") from None

    def acquire(self) -> RunLock:
        self._make_folder()
        for _ in range(10):
            fd, created = self._open()
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != os.geteuid():
                os.close(fd)
                raise UnsafePath(
                    f"{self.path} is not a lock file of yours (a special file, a file with other links, or "
                    "another user's); sds does not touch it: remove it or pick another folder"
                )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise SdsError(f"cannot lock the run folder {self.folder}: {exc.strerror or exc}") from None
                holder = self._holder()
                raise RunFolderBusy(
                    f"{self.folder} is in use by another sds process{holder}; wait for it to finish or pick "
                    "another folder"
                ) from None
            try:
                same = os.stat(self.path, follow_symlinks=False).st_ino == info.st_ino
            except FileNotFoundError:
                same = False
            if not same:  # discarded by its holder between our open and our lock: take the new one
                os.close(fd)
                continue
            if not created:
                os.lseek(fd, 0, os.SEEK_SET)
                if not _PID_LINE.match(os.read(fd, 64)):
                    os.close(fd)
                    raise UnsafePath(
                        f"{self.path} holds something other than a process id; sds does not overwrite it: "
                        "remove it and run again"
                    )
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd
            return self
        raise RunFolderBusy(f"{self.folder} is being claimed by other sds processes; try again")

    def _holder(self) -> str:
        try:
            fd = open_regular(self.path)
            with os.fdopen(fd, "rb") as handle:
                pid = handle.read(32).decode("ascii").strip()
        except (OSError, SdsError, UnicodeDecodeError):
            return ""
        return f" (pid {pid})" if pid.isdigit() else ""

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def discard(self) -> None:
        """Release the lock of a run that was refused: remove the lock file, and the folders this
        lock created if they hold nothing else, so that a refusal leaves nothing behind."""
        if self._fd is not None:
            try:
                entries = [p.name for p in self.folder.iterdir()]
                if entries == [LOCK_NAME]:
                    self.path.unlink()
            except OSError:
                pass
        self.release()
        for folder in self._made:
            try:
                folder.rmdir()  # only an empty folder goes
            except OSError:
                break

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __del__(self) -> None:
        self.release()
