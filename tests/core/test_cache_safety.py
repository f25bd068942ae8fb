"""sds_core.cache: a tensor cache that trusts only entries it can verify (issue 33, point 6).

Every way an entry can be wrong (another user's, another key's, another shape, a pickle, a FIFO, a
link, damage) is a miss that the next save repairs; a cache folder that is not the caller's, or
cannot be written, is no cache (one warning) and never an error.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from sds_core import cache
from sds_core.cache import KEY_NAME, CacheWarning, TensorSpec

OTHER_UID = 12345
KEY = '["model", "a red cube", 64]'
EXPECT = {"a": TensorSpec((3, 4), torch.float32), "b": TensorSpec((None,), torch.int64)}

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid needs root")


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(3, 4, generator=generator), "b": torch.arange(5) + seed}


@pytest.fixture(params=["pt", "safetensors"])
def entry(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """An entry's path below the cache folder tmp_path/cache, in each format."""
    if request.param == "safetensors":
        pytest.importorskip("safetensors")
    return tmp_path / "cache" / "things" / f"entry.{request.param}"


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "_warned", set())


def _root(entry: Path) -> Path:
    return entry.parent.parent


def _load(entry: Path, key: str = KEY, expect: dict[str, TensorSpec] = EXPECT) -> dict[str, torch.Tensor] | None:
    return cache.load(entry, key, expect, _root(entry))


def _save(entry: Path, tensors: dict[str, torch.Tensor], key: str = KEY) -> bool:
    return cache.save(entry, key, tensors, _root(entry))


def _equal(found: dict[str, torch.Tensor] | None, expected: dict[str, torch.Tensor]) -> bool:
    return (
        found is not None and found.keys() == expected.keys() and all(torch.equal(found[k], expected[k]) for k in found)
    )


@pytest.fixture
def no_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        yield


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """call(), failing the test if it does not return within `seconds` (a FIFO must not hang)."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"did not return within {seconds} s"
    return result[0]


def test_an_entry_round_trips_and_the_key_is_private(entry: Path, no_warning: None) -> None:
    tensors = _tensors()
    assert _save(entry, tensors)
    assert _equal(_load(entry), tensors)
    key_file = _root(entry) / KEY_NAME
    info = key_file.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_size == 32 and info.st_uid == os.geteuid()
    assert not [p for p in entry.parent.iterdir() if p.name != entry.name]  # no temporary file left


def test_an_entry_is_used_only_for_its_own_key(entry: Path, no_warning: None) -> None:
    _save(entry, _tensors())
    assert _load(entry, key='["model", "a blue cube", 64]') is None


def test_a_substituted_entry_is_not_used_and_is_rebuilt(entry: Path, tmp_path: Path, no_warning: None) -> None:
    """Prompt substitution: valid tensors of the right shapes, written for the same key by someone
    else (their own cache, their own key) and copied over the entry, are not used."""
    mine, theirs = _tensors(0), _tensors(1)
    _save(entry, mine)
    elsewhere = tmp_path / "theirs" / "things" / entry.name
    assert cache.save(elsewhere, KEY, theirs, elsewhere.parent.parent)
    shutil.copyfile(elsewhere, entry)
    assert _load(entry) is None
    assert _save(entry, mine)
    assert _equal(_load(entry), mine)


def _rewrite(entry: Path, edit: Callable[[dict[str, torch.Tensor]], Any]) -> None:
    """Edit an entry's tensors in place, keeping its metadata (digests) as they are."""
    if entry.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        with safe_open(str(entry), "pt") as handle:
            metadata = handle.metadata()
        tensors = load_file(entry)
        edit(tensors)
        save_file(tensors, entry, metadata=metadata)
    else:
        payload = torch.load(entry, weights_only=True)
        edit(payload["tensors"])
        torch.save(payload, entry)


def test_an_entry_whose_tensors_were_edited_is_not_used(entry: Path, no_warning: None) -> None:
    _save(entry, _tensors())
    _rewrite(entry, lambda tensors: tensors["a"].add_(1e-3))
    assert _load(entry) is None
    _save(entry, _tensors())
    _rewrite(entry, lambda tensors: tensors.update(b=tensors["b"][:3].clone()))  # still fits `expect`
    assert _load(entry) is None


@pytest.mark.parametrize(
    "wrong",
    [
        {"a": torch.zeros(4, 3), "b": torch.arange(5)},  # another shape
        {"a": torch.zeros(3, 4, dtype=torch.float64), "b": torch.arange(5)},  # another dtype
        {"a": torch.zeros(3, 4), "b": torch.arange(5).view(1, 5)},  # another rank
        {"a": torch.zeros(3, 4)},  # a tensor missing
        {"a": torch.zeros(3, 4), "b": torch.arange(5), "c": torch.zeros(1)},  # one too many
    ],
)
def test_an_entry_of_other_shapes_or_dtypes_is_rebuilt(entry: Path, wrong: dict[str, torch.Tensor]) -> None:
    """Even signed with the caller's own key (a bug, or the inputs changed under their key)."""
    _save(entry, wrong)
    assert _load(entry) is None
    _save(entry, _tensors())
    assert _equal(_load(entry), _tensors())


class _Planted:
    """Creates `marker` when unpickled: an unsafe load would run it."""

    marker = ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def test_a_pickle_is_not_run_and_is_rebuilt(entry: Path, tmp_path: Path) -> None:
    _save(entry, _tensors())  # the folder and its key exist: the pickle is what is read
    marker = tmp_path / "pwned"
    _Planted.marker = str(marker)
    torch.save({"metadata": {"format": "1"}, "tensors": _Planted()}, entry)
    plant = shutil.copyfile(entry, tmp_path / "plant.pt")
    assert _load(entry) is None
    assert not marker.exists()
    _save(entry, _tensors())
    assert _equal(_load(entry), _tensors())
    torch.load(plant, weights_only=False)  # the plant is real: an unsafe load would have run it
    assert marker.exists()


@pytest.mark.parametrize("damage", ["empty", "random", "truncated", "folder"])
def test_a_damaged_entry_is_rebuilt(entry: Path, damage: str) -> None:
    _save(entry, _tensors(1))
    data = entry.read_bytes()
    if damage == "folder":
        entry.unlink()
        entry.mkdir()
    else:
        entry.write_bytes({"empty": b"", "random": os.urandom(2048), "truncated": data[: len(data) // 2]}[damage])
    assert _load(entry) is None
    if damage != "folder":
        _save(entry, _tensors())
        assert _equal(_load(entry), _tensors())


def test_a_fifo_does_not_hang_and_is_replaced(entry: Path, no_warning: None) -> None:
    _save(entry, _tensors())
    entry.unlink()
    os.mkfifo(entry)
    assert _within(10, lambda: _load(entry)) is None
    assert _within(10, lambda: _save(entry, _tensors()))
    assert entry.is_file() and not entry.is_symlink()
    assert _equal(_load(entry), _tensors())


def test_a_link_is_not_followed_and_is_replaced(entry: Path, tmp_path: Path, no_warning: None) -> None:
    """Even a link to a valid entry of the caller's: the file outside is neither read nor written."""
    _save(entry, _tensors())
    outside = tmp_path / "outside" / "things" / entry.name
    outside.parent.mkdir(parents=True)
    shutil.copy2(_root(entry) / KEY_NAME, outside.parent.parent / KEY_NAME)  # the same key
    cache.save(outside, KEY, _tensors(1), outside.parent.parent)
    assert _equal(cache.load(outside, KEY, EXPECT, outside.parent.parent), _tensors(1))
    before = outside.read_bytes()
    entry.unlink()
    entry.symlink_to(outside)
    assert _load(entry) is None
    assert _save(entry, _tensors())
    assert not entry.is_symlink() and outside.read_bytes() == before
    assert _equal(_load(entry), _tensors())


def test_a_linked_subfolder_is_not_followed(entry: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _save(entry, _tensors())
    shutil.rmtree(entry.parent)
    entry.parent.symlink_to(elsewhere, target_is_directory=True)
    with pytest.warns(CacheWarning):
        assert not _save(entry, _tensors())
    assert list(elsewhere.iterdir()) == []
    assert _load(entry) is None


def _one_warning(record: list[warnings.WarningMessage]) -> str:
    found = [w for w in record if issubclass(w.category, CacheWarning)]
    assert len(found) == 1, [str(w.message) for w in found]
    message = str(found[0].message)
    assert "\n" not in message
    return message


def _refuse_creation(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Every new file or folder fails with `code` (a read-only disk: EROFS)."""
    real_open, real_mkdir = os.open, os.mkdir

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if not os.path.isdir(path):
            raise OSError(code, os.strerror(code), str(path))
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


@pytest.mark.parametrize("how", ["file-as-folder", "file-as-subfolder", "read-only", "read-only-keyed", "disk-full"])
def test_an_unwritable_cache_is_one_warning(entry: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    root = _root(entry)
    if how == "file-as-folder":
        root.parent.mkdir(parents=True, exist_ok=True)
        root.write_bytes(b"not a folder")
    elif how == "file-as-subfolder":
        root.mkdir(parents=True)
        entry.parent.write_bytes(b"not a folder")
    elif how == "read-only":
        _refuse_creation(monkeypatch, errno.EROFS)
    elif how == "read-only-keyed":
        _save(entry.with_name("other" + entry.suffix), _tensors())  # the key exists; the entry cannot
        _refuse_creation(monkeypatch, errno.EROFS)
    else:
        _save(entry.with_name("other" + entry.suffix), _tensors())

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", full)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):  # one line per folder and process, however many entries fail
            assert _load(entry) is None
            assert not _save(entry, _tensors())
    message = _one_warning(record)
    assert str(root) in message and "going on without it" in message
    assert not entry.exists()


@root_only
def test_a_cache_folder_of_another_user_is_not_written(entry: Path) -> None:
    root = _root(entry)
    root.mkdir(parents=True)
    os.chown(root, OTHER_UID, OTHER_UID)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert not _save(entry, _tensors())
        assert _load(entry) is None
    assert f"uid {OTHER_UID}" in _one_warning(record)
    assert list(root.iterdir()) == []


@root_only
def test_a_cache_folder_is_not_created_inside_another_users_folder(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, OTHER_UID, OTHER_UID)
    entry = theirs / "deep" / "cache" / "things" / "entry.pt"
    with pytest.warns(CacheWarning, match=f"belongs to uid {OTHER_UID}"):
        assert not _save(entry, _tensors())
    assert list(theirs.iterdir()) == []


@root_only
def test_a_subfolder_of_another_user_is_not_written(entry: Path) -> None:
    _save(entry.with_name("other" + entry.suffix), _tensors())
    os.chown(entry.parent, OTHER_UID, OTHER_UID)
    with pytest.warns(CacheWarning, match=f"belongs to uid {OTHER_UID}"):
        assert not _save(entry, _tensors())
    assert not entry.exists()


@pytest.mark.parametrize("plant", ["another-users", "readable-by-others", "short", "link", "fifo"])
def test_a_key_file_that_is_not_private_and_mine_is_not_used(entry: Path, tmp_path: Path, plant: str) -> None:
    """A key another user could know (theirs, readable, a link to elsewhere) would let them sign."""
    _save(entry, _tensors())
    key_file = _root(entry) / KEY_NAME
    if plant == "another-users":
        if os.geteuid() != 0:
            pytest.skip("giving a file to another uid needs root")
        os.chown(key_file, OTHER_UID, OTHER_UID)
    elif plant == "readable-by-others":
        key_file.chmod(0o644)
    elif plant == "short":
        key_file.write_bytes(b"0" * 8)
    elif plant == "link":
        known = tmp_path / "known"
        known.write_bytes(b"k" * 32)
        known.chmod(0o600)
        key_file.unlink()
        key_file.symlink_to(known)
    else:
        key_file.unlink()
        os.mkfifo(key_file, 0o600)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert _within(10, lambda: _load(entry)) is None
        assert not _within(10, lambda: _save(entry, _tensors()))
    assert KEY_NAME in _one_warning(record)


def test_a_cache_folder_is_made_with_its_parents(tmp_path: Path, no_warning: None) -> None:
    entry = tmp_path / "a" / "b" / "cache" / "things" / "entry.pt"
    assert cache.load(entry, KEY, EXPECT, entry.parent.parent) is None  # a load creates nothing
    assert not (tmp_path / "a").exists()
    assert cache.save(entry, KEY, _tensors(), entry.parent.parent)
    assert _equal(cache.load(entry, KEY, EXPECT, entry.parent.parent), _tensors())
