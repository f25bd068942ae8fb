"""A verified tensor cache: entries keyed by their inputs, checked on load, rebuilt on any mismatch.

`save(path, key, tensors, root)` writes the tensors with two digests: one of `key` (the full
description of the inputs: model, prompt, resolution, ...) and one of the tensors' names, dtypes,
shapes and bytes. `load(path, key, expect, root)` returns them only when both digests match and
every tensor has the dtype and shape the caller expects; anything else (another key, a damaged or
truncated file, a pickle, a link, a FIFO or other special file, another shape) is a miss, and the
caller's next `save` replaces the entry atomically (`sds_core.files.atomic_write`).

Formats: `.safetensors` entries (no pickle; the digests in its metadata) need the safetensors
package; any other suffix is a torch file of plain data read through
`sds_core.checkpoint.load_plain` (`weights_only=True`). Only regular files are read, opened
non-blocking and without following links below the cache folder.

Trust. The digests are HMACs with a per-user secret: 32 random bytes created on first use as
`<cache folder>/.sds-cache-key`, mode 0600, and used only while it is a private regular file of
the caller's. A plain digest would catch damage and stale entries but not a forgery: whoever can
write the cache can compute it. With the secret, an entry that another user planted or edited
(prompt substitution: valid tensors of the right shape for another prompt) fails verification and
is rebuilt. A cache folder is used only when it belongs to the caller: one that exists and is
owned by another user, or that would have to be created inside a folder of another user's (a
sticky folder such as /tmp excepted), is skipped. The trade-off: a cache cannot be shared between
users; each user fills their own (the default, `$SDS_CACHE_DIR` or `~/.cache/sds`, is per user). A
user's runs on several machines do share one cache on a shared disk, the key being in the folder.

A cache that cannot be used or written (another user's folder, a file where the folder belongs,
a read-only disk, a full disk) is no cache: one warning line per folder and process
(`CacheWarning`), and the computation goes on without it.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import io
import json
import os
import secrets
import stat
import warnings
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from sds_core.checkpoint import load_plain
from sds_core.errors import SdsError
from sds_core.files import atomic_write, folder_fd, read_regular, temp_name

FORMAT = "1"  # of an entry's metadata; another value is a miss
KEY_NAME = ".sds-cache-key"
_KEY_BYTES = 32
_warned: set[str] = set()  # the cache folders warned about in this process


class CacheWarning(UserWarning):
    """A cache folder that cannot be used: the run goes on without it."""


class TensorSpec(NamedTuple):
    """What a cached tensor must be: its shape (None: any size along that axis) and dtype."""

    shape: tuple[int | None, ...]
    dtype: torch.dtype


class _Unusable(Exception):
    """Why a cache folder is not used (the text of the warning)."""


def _warn(root: Path, reason: str) -> None:
    if str(root) in _warned:
        return
    _warned.add(str(root))
    warnings.warn(f"the sds cache {root} is not used: {reason}; going on without it", CacheWarning, stacklevel=3)


def _create(root: Path) -> None:
    """Create `root` and its missing parents, only below a folder of the caller's (or a sticky one)."""
    here = root.absolute()
    while not os.path.lexists(here) and here.parent != here:
        here = here.parent
    try:
        info = os.stat(here)
    except OSError as exc:
        raise _Unusable(f"{here} cannot be read ({exc.strerror})") from None
    if not stat.S_ISDIR(info.st_mode):
        raise _Unusable(f"{here} is not a folder")
    if info.st_uid != os.geteuid() and not info.st_mode & stat.S_ISVTX:
        raise _Unusable(f"it would be created in {here}, which belongs to uid {info.st_uid}")
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        raise _Unusable(f"it cannot be created ({exc.strerror or exc})") from None


def _open_root(root: Path, create: bool) -> int | None:
    """A descriptor of the cache folder if it is the caller's (None: absent and not `create`)."""
    try:
        info = os.lstat(root)
    except FileNotFoundError:
        if not create:
            return None
        _create(root)
        info = os.lstat(root)
    except OSError as exc:
        raise _Unusable(f"it cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode) and info.st_uid not in (os.geteuid(), 0):
        raise _Unusable(f"it is a link made by uid {info.st_uid}")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT and not create:
            return None
        reason = "it is not a folder" if exc.errno == errno.ENOTDIR else f"it cannot be opened ({exc.strerror})"
        raise _Unusable(reason) from None
    owner = os.fstat(fd).st_uid
    if owner != os.geteuid():
        os.close(fd)
        raise _Unusable(f"it belongs to uid {owner}, not to you (uid {os.geteuid()})")
    return fd


def _read_secret(root_fd: int) -> bytes | None:
    """The folder's key, if it is a private regular file of the caller's (None: no key yet)."""
    try:
        fd = os.open(KEY_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=root_fd)
    except FileNotFoundError:
        return None
    except OSError:
        fd = -1
    data = b""
    try:
        if fd >= 0:
            info = os.fstat(fd)
            private = info.st_uid == os.geteuid() and not info.st_mode & 0o077
            if stat.S_ISREG(info.st_mode) and private and info.st_size == _KEY_BYTES:
                data = os.read(fd, _KEY_BYTES + 1)
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) != _KEY_BYTES:
        raise _Unusable(f"its key file {KEY_NAME} is not a private file of yours (remove it to make a new one)")
    return data


def _make_secret(root_fd: int) -> bytes:
    """Create the folder's key: written in full to a 0600 temporary file, then linked into place
    (a link never replaces a key another process made meanwhile: that one is read instead)."""
    secret = secrets.token_bytes(_KEY_BYTES)
    tmp = temp_name(KEY_NAME)
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=root_fd)
        try:
            if os.write(out, secret) != _KEY_BYTES:
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(out)
        finally:
            os.close(out)
        os.link(tmp, KEY_NAME, src_dir_fd=root_fd, dst_dir_fd=root_fd)
    except FileExistsError:
        found = _read_secret(root_fd)
        if found is None:
            raise _Unusable(f"its key file {KEY_NAME} appeared and vanished") from None
        return found
    except OSError as exc:
        raise _Unusable(f"its key file {KEY_NAME} cannot be written ({exc.strerror or exc})") from None
    finally:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=root_fd)
    return secret


def _secret(root: Path, create: bool) -> bytes | None:
    """The caller's key of the cache folder `root` (None: no folder or key yet, and not `create`)."""
    fd = _open_root(root, create)
    if fd is None:
        return None
    try:
        found = _read_secret(fd)
        if found is None and create:
            found = _make_secret(fd)
        return found
    finally:
        os.close(fd)


def _key_digest(secret: bytes, key: str) -> str:
    return hmac.new(secret, b"sds-cache-key\0" + key.encode(), hashlib.sha256).hexdigest()


def _content_digest(secret: bytes, key_digest: str, tensors: Mapping[str, Tensor]) -> str:
    """An HMAC of the tensors' names, dtypes, shapes and bytes (in name order), bound to the key."""
    mac = hmac.new(secret, b"sds-cache-content\0" + key_digest.encode(), hashlib.sha256)
    for name in sorted(tensors):
        tensor = tensors[name]
        header = json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode()
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        mac.update(len(header).to_bytes(8, "little") + header + data.nbytes.to_bytes(8, "little"))
        mac.update(data.data)
    return mac.hexdigest()


def _serialize(path: Path, metadata: dict[str, str], tensors: dict[str, Tensor]) -> bytes:
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        return save(tensors, metadata=metadata)
    buffer = io.BytesIO()
    torch.save({"metadata": metadata, "tensors": tensors}, buffer)
    return buffer.getvalue()


def _deserialize(path: Path, root: Path) -> tuple[Any, Any]:
    """(metadata, tensors) of an entry; an OSError, SdsError or ValueError when it cannot be read."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load

        data = read_regular(path, root)
        try:
            size = int.from_bytes(data[:8], "little")
            metadata = json.loads(data[8 : 8 + size]).get("__metadata__")
            return metadata, load(data)
        except (SafetensorError, AttributeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a safetensors file") from exc
    payload = load_plain(path, kind="sds cache entry", root=root)
    if not isinstance(payload, dict):
        raise ValueError(f"{path} is not an sds cache entry")
    return payload.get("metadata"), payload.get("tensors")


def _fits(tensor: Any, spec: TensorSpec) -> bool:
    if not isinstance(tensor, Tensor) or tensor.dtype != spec.dtype or tensor.dim() != len(spec.shape):
        return False
    return all(want is None or want == size for want, size in zip(spec.shape, tensor.shape, strict=True))


def _same(found: Any, digest: str) -> bool:
    return isinstance(found, str) and hmac.compare_digest(found.encode(), digest.encode())


def load(path: Path, key: str, expect: Mapping[str, TensorSpec], root: Path | None = None) -> dict[str, Tensor] | None:
    """The tensors cached at `path` for `key`, or None when there is no valid entry.

    expect: every tensor the entry must hold, with its shape and dtype (and no other).
    root: the cache folder (`path` lies below it; default its folder), where the key is kept."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    try:
        secret = _secret(root, create=False)
    except _Unusable as exc:
        _warn(root, str(exc))
        return None
    if secret is None:
        return None
    try:
        metadata, tensors = _deserialize(path, root)
    except (OSError, SdsError, ValueError, ImportError):
        return None  # missing, damaged, a pickle, a link or special file: rebuilt by the caller
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT or not isinstance(tensors, dict):
        return None
    key_digest = _key_digest(secret, key)
    if not _same(metadata.get("key"), key_digest) or set(tensors) != set(expect):
        return None
    if not all(_fits(tensors[name], TensorSpec(*spec)) for name, spec in expect.items()):
        return None
    if not _same(metadata.get("content"), _content_digest(secret, key_digest, tensors)):
        return None
    return tensors


def _clear(folder: int, name: str) -> None:
    """Remove a link, FIFO or other non-regular file where an entry belongs (never following it)."""
    try:
        mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        os.unlink(name, dir_fd=folder)


def save(path: Path, key: str, tensors: Mapping[str, Tensor], root: Path | None = None) -> bool:
    """Cache `tensors` at `path` for `key` (atomically); False, with one warning, when it cannot.

    root: the cache folder (`path` lies below it; default its folder): created if missing, used only
    when it is the caller's (see the module's docstring)."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    parts = path.parent.relative_to(root).parts  # a ValueError for a path outside the cache: a bug
    try:
        secret = _secret(root, create=True)
        assert secret is not None
        with folder_fd(root, parts, create=True) as folder:
            owner = os.fstat(folder).st_uid
            if owner != os.geteuid():
                raise _Unusable(f"{path.parent} belongs to uid {owner}")
            _clear(folder, path.name)
        plain = {name: t.detach().to("cpu").clone(memory_format=torch.contiguous_format) for name, t in tensors.items()}
        key_digest = _key_digest(secret, key)
        metadata = {"format": FORMAT, "key": key_digest, "content": _content_digest(secret, key_digest, plain)}
        atomic_write(path, _serialize(path, metadata, plain), root=root)
    except _Unusable as exc:
        _warn(root, str(exc))
        return False
    except (SdsError, OSError, ImportError) as exc:
        _warn(root, " ".join(str(exc).split()) or type(exc).__name__)
        return False
    return True
