"""Checkpoints: atomic writes, RNG state capture, and safe loading for resume.

A checkpoint holds tensors and plain data only (dicts, lists, tuples, str, int, float, bool,
None), so it is read with `torch.load(weights_only=True)`: a checkpoint is a file other people can
write (a shared run folder), and a full unpickle would run any code planted in it. Format 2 keeps
numpy's RNG state as a tensor for that reason; format 1 (a pickled numpy array) is refused.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sds_core.errors import SdsError
from sds_core.files import atomic_write, open_regular

FORMAT = 2
REQUIRED = {"step": int, "generator": dict, "optimizer": dict, "rng": dict}


def rng_state() -> dict[str, Any]:
    """Every random state a run draws from, so that a resumed run continues bit for bit."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),  # (version, tuple of ints, float | None): plain data
        # numpy's MT19937 key is a uint32 array: kept as an int64 tensor so no numpy object is pickled
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    rng = state["numpy"]
    keys = rng["keys"].numpy().astype(np.uint32)
    np.random.set_state((rng["kind"], keys, rng["pos"], rng["has_gauss"], rng["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(path: Path, payload: dict[str, Any], root: Path | None = None) -> Path:
    """torch.save to a temporary file beside `path`, fsync, then rename over it (atomic).
    root: the run folder `path` is in (no link below it is followed, `sds_core.files`)."""
    return atomic_write(Path(path), lambda tmp: torch.save({"format": FORMAT, **payload}, tmp), root=root)


def _torch_load(path: Path, root: Path | None, map_location: str | torch.device, mmap: bool) -> Any:
    """torch.load of a regular file only (a FIFO must not hang the reader, a link below `root` is
    refused); memory-mapping goes through the open descriptor's /proc path where there is one."""
    fd = open_regular(path, root)
    with os.fdopen(fd, "rb") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about pickle protocols of foreign files
        if not mmap:
            return torch.load(handle, map_location=map_location, weights_only=True)
        by_fd = Path(f"/proc/self/fd/{handle.fileno()}")
        return torch.load(by_fd if by_fd.exists() else path, map_location=map_location, weights_only=True, mmap=True)


def load_plain(
    path: Path,
    map_location: str | torch.device = "cpu",
    mmap: bool = False,
    kind: str = "sds file",
    older: str = "a file written by an older sds version",
    root: Path | None = None,
) -> Any:
    """A torch file of tensors and plain data, loaded without running any code it might carry.

    kind, older: how the messages name the file and the legitimate source of pickled objects.
    root: the run folder `path` is in (links below it are refused). Only a regular file is read.
    Every way a file can be wrong (damaged, truncated, foreign, tampered) is an SdsError."""
    path = Path(path)
    damaged = SdsError(f"{path} is not a readable {kind} (empty, truncated, damaged or not written by sds)")
    try:
        return _torch_load(path, root, map_location, mmap)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # a class or function the file asks to be called
            raise SdsError(
                f"{path} holds pickled objects other than tensors and plain data ({older}, or a tampered "
                f"file) and is not loaded, for safety"
            ) from None
        raise damaged from None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR):
            raise SdsError(f"{path} cannot be read: {exc.strerror}") from None
        raise damaged from None
    except (RuntimeError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        raise damaged from None


def load_checkpoint(
    path: Path, map_location: str | torch.device = "cpu", mmap: bool = False, root: Path | None = None
) -> dict[str, Any]:
    """A checkpoint of this format, loaded without running any code it might carry (`load_plain`).

    mmap: map the tensors instead of reading them (cheap when only the plain data is needed).
    Every way a file can be wrong (damaged, truncated, foreign, older, tampered) is an SdsError."""
    path = Path(path)
    older = f"a checkpoint written by an sds version older than format {FORMAT}"
    payload = load_plain(path, map_location=map_location, mmap=mmap, kind="sds checkpoint", older=older, root=root)
    if not isinstance(payload, dict) or "format" not in payload:
        raise SdsError(f"{path} is not an sds checkpoint")
    if payload["format"] != FORMAT:
        raise SdsError(
            f"{path} is an sds checkpoint of format {payload['format']!r}; this version reads format {FORMAT}"
        )
    for key, kind in REQUIRED.items():
        if not isinstance(payload.get(key), kind):
            raise SdsError(f"{path} is not a complete sds checkpoint ({key!r} is missing or of the wrong type)")
    if payload["step"] < 0:
        raise SdsError(f"{path} records a negative step ({payload['step']}); it is not an sds checkpoint")
    return payload


def checkpoint_step(path: Path, root: Path | None = None) -> int:
    """The step a checkpoint was written at, without reading its tensors (they are memory-mapped)."""
    return int(load_checkpoint(path, mmap=True, root=root)["step"])
