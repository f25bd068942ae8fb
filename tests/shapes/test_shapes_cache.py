"""The shapes prior's reference cache trusts only its own verified entries (issue 33, point 6).

A planted entry (other renders of the right shape, a wrong shape, a pickle, a link) is traced again
and rewritten, and what the prior then uses is bit for bit what tracing gives; a cache folder that
is not the user's, or cannot be written, is no cache (one warning line).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sds_shapes")

import torch

from sds_core import cache
from sds_core.cache import CacheWarning
from sds_core.config import CameraConfig
from sds_shapes import render
from sds_shapes.config import ShapesConfig
from sds_shapes.guidance import ShapesGuidance
from sds_shapes.render import ReferenceViews, build_references

ARGS: dict[str, Any] = {"resolution": 8, "views": 3, "seed": 0, "supersample": 1}

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid needs root")


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "_warned", set())


@pytest.fixture
def traces(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of `trace_buffers` (a cache hit makes none)."""
    calls: list[int] = []
    real = render.trace_buffers

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(render, "trace_buffers", counted)
    return calls


def _build(cache_dir: Path | None) -> ReferenceViews:
    return build_references(CameraConfig(), cache_dir=cache_dir, **ARGS)


def _same(a: ReferenceViews, b: ReferenceViews) -> bool:
    for field in fields(ReferenceViews):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, torch.Tensor):
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                return False
        elif x != y:
            return False
    return True


def _entry(cache_dir: Path) -> Path:
    (entry,) = (cache_dir / "shapes").glob("references-*.pt")
    return entry


def test_cached_references_are_bit_identical_to_traced_ones(tmp_path: Path, traces: list[int]) -> None:
    fresh = _build(None)
    first, again = _build(tmp_path), _build(tmp_path)
    assert len(traces) == 2  # the uncached build and the first cached one; the second read the cache
    assert _same(first, fresh) and _same(again, fresh)


def _old_format(refs: ReferenceViews, **changes: torch.Tensor) -> dict[str, Any]:
    """An entry as the old cache wrote it: torch.save(asdict(refs)), with some tensors replaced."""
    return {**asdict(refs), **changes}


@pytest.mark.parametrize("plant", ["other-renders", "wrong-shape", "signed-by-another-user"])
def test_a_planted_entry_is_traced_again(
    tmp_path: Path, traces: list[int], plant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = _build(None)
    _build(tmp_path)
    entry = _entry(tmp_path)
    if plant == "other-renders":  # valid buffers of the right shape: another world's renders
        torch.save(_old_format(fresh, coverage=torch.ones_like(fresh.coverage)), entry)
    elif plant == "wrong-shape":
        torch.save(_old_format(fresh, coverage=fresh.coverage[:, :1], lit=fresh.lit[:, :1]), entry)
    else:  # another user's own cache: their entry (their key) for the same inputs, other buffers
        theirs, keys = tmp_path / "theirs", list[str]()
        real = cache.save

        def spy(path: Path, key: str, *args: Any) -> bool:
            keys.append(key)
            return real(path, key, *args)

        monkeypatch.setattr(render, "cache_save", spy)  # what build_references calls
        _build(theirs)
        monkeypatch.setattr(render, "cache_save", real)
        planted = {"coverage": torch.ones_like(fresh.coverage), "lit": fresh.lit}
        assert cache.save(_entry(theirs), keys[0], planted, theirs)
        entry.write_bytes(_entry(theirs).read_bytes())
    traces.clear()
    assert _same(_build(tmp_path), fresh)
    assert len(traces) == 1
    assert _same(_build(tmp_path), fresh) and len(traces) == 1  # rebuilt: read from now on


class _Planted:
    marker = ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def test_a_planted_pickle_is_not_run_and_is_rebuilt(tmp_path: Path, traces: list[int]) -> None:
    fresh = _build(None)
    _build(tmp_path)
    marker = tmp_path / "pwned"
    _Planted.marker = str(marker)
    torch.save({"coverage": _Planted()}, _entry(tmp_path))
    assert _same(_build(tmp_path), fresh)
    assert not marker.exists()
    traces.clear()
    _build(tmp_path)
    assert traces == []


def test_a_link_entry_is_not_followed(tmp_path: Path) -> None:
    fresh = _build(None)
    _build(tmp_path / "cache")
    entry = _entry(tmp_path / "cache")
    outside = tmp_path / "outside.pt"
    torch.save(_old_format(fresh, coverage=torch.zeros_like(fresh.coverage)), outside)
    before = outside.read_bytes()
    entry.unlink()
    entry.symlink_to(outside)
    assert _same(_build(tmp_path / "cache"), fresh)
    assert not entry.is_symlink() and outside.read_bytes() == before


def _one_warning(record: list[warnings.WarningMessage]) -> str:
    found = [str(w.message) for w in record if issubclass(w.category, CacheWarning)]
    assert len(found) == 1 and "\n" not in found[0], found
    return found[0]


def test_an_unwritable_cache_is_one_warning(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_bytes(b"")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        refs = [_build(not_a_folder) for _ in range(2)]
    _one_warning(record)
    assert all(_same(r, _build(None)) for r in refs)


@root_only
def test_a_cache_dir_of_another_user_from_the_config_is_not_written(tmp_path: Path, context_factory) -> None:
    """`guidance.cache_dir` as a run's config.json (written by anyone) may name it."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 12345, 12345)
    config = ShapesConfig(cache_dir=str(theirs), references="fixed", **ARGS)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        views = ShapesGuidance(config, context_factory("a red cube")).views
    assert "uid 12345" in _one_warning(record)
    assert list(theirs.iterdir()) == []
    assert _same(views, _build(None))
