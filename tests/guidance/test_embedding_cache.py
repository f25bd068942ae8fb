"""The text-embedding cache trusts only its own verified entries (issue 33, point 6).

A planted entry (another prompt's embedding, another user's entry, a wrong shape, a link) is
encoded again and rewritten; a cache folder that is not the user's or cannot be written is no
cache (one warning line) and the embeddings are still computed.
"""

from __future__ import annotations

import os
import shutil
import warnings
import zlib
from pathlib import Path

import pytest

pytest.importorskip("sds_guidance")
pytest.importorskip("safetensors")

import torch
from safetensors.torch import save_file

from sds_core import cache
from sds_core.cache import CacheWarning
from sds_guidance.config import PromptOptions
from sds_guidance.prompt_embeddings import EmbeddingCache, PromptEmbeddings

KEY = '["tiny-clip", "clip", null, null, 4]'
SHAPE = (4, 3)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid needs root")


class Encoder:
    """A deterministic text encoder (L=4, D=3 unless told) that records what it was asked."""

    def __init__(self, width: int = SHAPE[1]) -> None:
        self.calls: list[list[str]] = []
        self.width = width

    def embedding(self, prompt: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(zlib.crc32(prompt.encode()))
        return torch.randn(SHAPE[0], self.width, generator=generator)

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        self.calls.append(list(prompts))
        return torch.stack([self.embedding(p) for p in prompts])


def _entry(root: Path, prompt: str) -> Path:
    path = EmbeddingCache(root, KEY).path(prompt)
    assert path is not None
    return path


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "_warned", set())


@pytest.mark.parametrize("plant", ["unsigned", "signed-by-another-user"])
def test_a_substituted_prompt_embedding_is_not_used(tmp_path: Path, plant: str) -> None:
    """Prompt substitution: the entry of "a cat" replaced by a valid embedding of "a dog"."""
    root, encode = tmp_path / "cache", Encoder()
    EmbeddingCache(root, KEY).get(["a cat"], encode)
    cat = _entry(root, "a cat")
    if plant == "unsigned":
        save_file({"embedding": encode.embedding("a dog")}, cat)
    else:  # another user's own cache, entry made for "a cat" with the dog's embedding, copied over
        theirs = tmp_path / "theirs"
        EmbeddingCache(theirs, KEY).save("a cat", encode.embedding("a dog"))
        shutil.copyfile(_entry(theirs, "a cat"), cat)
    encode.calls.clear()
    found = EmbeddingCache(root, KEY).get(["a cat"], encode)
    assert torch.equal(found["a cat"], encode.embedding("a cat"))
    assert encode.calls == [["a cat"]]
    EmbeddingCache(root, KEY).get(["a cat"], encode)
    assert encode.calls == [["a cat"]]  # the entry was rebuilt: the next run reads it


def test_a_wrong_shape_entry_is_encoded_again(tmp_path: Path) -> None:
    root, encode = tmp_path / "cache", Encoder()
    EmbeddingCache(root, KEY).get(["a cat"], encode)
    save_file({"embedding": torch.zeros(77, 1024)}, _entry(root, "a cat"))  # unsigned, another model's shape
    # signed with the user's own key but of another width (the model changed under its key)
    cache.save(
        _entry(root, "a dog"), EmbeddingCache(root, KEY).entry_key("a dog"), {"embedding": torch.zeros(4, 5)}, root
    )
    encode.calls.clear()
    found = EmbeddingCache(root, KEY, shape=SHAPE).get(["a cat", "a dog"], encode)
    for prompt in ("a cat", "a dog"):
        assert torch.equal(found[prompt], encode.embedding(prompt))
    assert encode.calls == [["a cat", "a dog"]]


def test_without_a_known_shape_entries_must_agree_with_the_encoder(tmp_path: Path) -> None:
    root, encode = tmp_path / "cache", Encoder()
    EmbeddingCache(root, KEY).get(["a dog"], Encoder(width=5))  # cached by a wider model of the same key
    found = EmbeddingCache(root, KEY).get(["a cat", "a dog"], encode)
    assert encode.calls == [["a cat"], ["a dog"]]
    assert torch.equal(found["a dog"], encode.embedding("a dog"))
    encode.calls.clear()
    EmbeddingCache(root, KEY).get(["a cat", "a dog"], encode)
    assert encode.calls == []


def test_a_link_entry_is_not_followed(tmp_path: Path) -> None:
    root, encode = tmp_path / "cache", Encoder()
    EmbeddingCache(root, KEY).get(["a cat"], encode)
    outside = tmp_path / "outside.safetensors"
    save_file({"embedding": encode.embedding("a dog")}, outside)
    before = outside.read_bytes()
    cat = _entry(root, "a cat")
    cat.unlink()
    cat.symlink_to(outside)
    found = EmbeddingCache(root, KEY).get(["a cat"], encode)
    assert torch.equal(found["a cat"], encode.embedding("a cat"))
    assert not cat.is_symlink() and outside.read_bytes() == before


def _table(cache_dir: Path, encode: Encoder) -> PromptEmbeddings:
    options = PromptOptions(cache_dir=str(cache_dir), negative_prompt="")
    return PromptEmbeddings("a cat", options, encode, KEY, torch.device("cpu"), torch.float32)


def _one_warning(record: list[warnings.WarningMessage]) -> str:
    found = [str(w.message) for w in record if issubclass(w.category, CacheWarning)]
    assert len(found) == 1 and "\n" not in found[0], found
    return found[0]


def test_an_unwritable_cache_is_one_warning_and_the_run_goes_on(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_bytes(b"a file where the cache folder belongs")
    encode = Encoder()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        table = _table(not_a_folder, encode)
        conditioning = table.condition(2, ["front", "back"])
    assert str(not_a_folder) in _one_warning(record)
    assert torch.equal(conditioning.cond[1], encode.embedding("a cat, back view"))
    assert not_a_folder.read_bytes() == b"a file where the cache folder belongs"


@root_only
def test_a_cache_dir_of_another_user_is_not_written(tmp_path: Path) -> None:
    """As a run's config.json may name it (`guidance.cache_dir`)."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 12345, 12345)
    encode = Encoder()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        table = _table(theirs, encode)
    assert "uid 12345" in _one_warning(record)
    assert torch.equal(table.table["a cat"], encode.embedding("a cat"))
    assert list(theirs.iterdir()) == []
