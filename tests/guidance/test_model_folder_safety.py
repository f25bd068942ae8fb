"""A model folder is data, never code (issue 33): no folder's Python runs, even with "y" on stdin;
pickled weights only when `allow_pickled_weights`; a hostile or damaged weight file is one sentence;
a load prints nothing of the libraries' own (logs, progress bars).

Run on copies of the tiny published architectures (tests/fixtures/published.py), offline.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import torch

from sds_core.errors import SdsError

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"sd": "sd21-base", "if": "if-i-xl", "clip": "clip-vit-base-patch32"}
TOKENIZER = {"sd": "tokenizer", "if": "tokenizer", "clip": ""}  # where each keeps its tokenizer
# what `import evil` does: leave a mark, then offer the classes the auto_map entries name
EVIL_CODE = """import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import PretrainedConfig, PreTrainedTokenizerFast
class EvilTokenizer(PreTrainedTokenizerFast):
    pass
class EvilConfig(PretrainedConfig):
    model_type = "evil"
"""


class _Touch:
    """Unpickled without weights_only, creates `path` (stands for any code a pickle can run)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.path,))


def _copy(published_model: Callable[[str], Path], kind: str, tmp_path: Path) -> Path:
    folder = tmp_path / MODELS[kind]
    shutil.copytree(published_model(MODELS[kind]), folder)
    return folder


def _build(kind: str, folder: Path, **options: Any) -> Any:
    """The backend of `kind` on `folder` (the CLIP scorer for "clip"), prompt embeddings computed now."""
    if kind == "clip":
        from sds_eval.clip_model import ClipScorer

        return ClipScorer(str(folder), **options)
    from sds_core.protocols import BuildContext

    context = BuildContext(device=torch.device("cpu"), prompt="a red cube", total_steps=10, config={})
    if kind == "sd":
        from sds_guidance.config import StableDiffusionConfig
        from sds_guidance.stable_diffusion import StableDiffusionGuidance

        return StableDiffusionGuidance(
            StableDiffusionConfig(model=str(folder), embedding_cache=False, **options), context
        )
    from sds_guidance.config import DeepFloydIFConfig
    from sds_guidance.deepfloyd_if import DeepFloydIFGuidance

    return DeepFloydIFGuidance(DeepFloydIFConfig(model=str(folder), embedding_cache=False, **options), context)


def _plant_code(folder: Path, kind: str, where: str, marker: Path) -> None:
    """An `auto_map` naming `evil.py` (in the folder and beside the tokenizer, where transformers
    looks): in tokenizer_config.json (a tokenizer class of its own) or in a config.json beside
    the tokenizer (AutoConfig's entry)."""
    tokenizer = folder / TOKENIZER[kind]
    for place in {folder, tokenizer}:
        (place / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    if where == "tokenizer_config":
        config = json.loads((tokenizer / "tokenizer_config.json").read_text())
        config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizer"]}
        config["tokenizer_class"] = "EvilTokenizer"
        (tokenizer / "tokenizer_config.json").write_text(json.dumps(config))
    else:
        (tokenizer / "config.json").write_text(json.dumps({"auto_map": {"AutoConfig": "evil.EvilConfig"}}))


def _weights(folder: Path, part: str) -> Path:
    (file,) = (folder / part).glob("*.safetensors")
    return file


def _pickle_weights(folder: Path, part: str) -> Path:
    """Replace the safetensors weights of `part` by the same tensors pickled (`save_pretrained` of old)."""
    from safetensors.torch import load_file

    file = _weights(folder, part)
    pickled = file.with_name({"model.safetensors": "pytorch_model.bin"}.get(file.name, file.with_suffix(".bin").name))
    torch.save(load_file(file), pickled)
    file.unlink()
    return pickled


def _one_sentence(exc: pytest.ExceptionInfo[SdsError], *words: str) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture
def modules_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where transformers would copy a folder's code to import it: a temporary folder, never ~/.cache."""
    import transformers.dynamic_module_utils as dynamic

    cache = tmp_path / "hf-modules"
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(cache))
    return cache


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("sd", "tokenizer_config"),
        ("if", "tokenizer_config"),
        ("clip", "tokenizer_config"),
        ("sd", "config"),
        ("if", "config"),
    ],
)
def test_a_folders_own_code_never_runs_even_with_yes_on_stdin(
    published_model, tmp_path, monkeypatch, capsys, modules_cache, kind, where
) -> None:
    folder = _copy(published_model, kind, tmp_path)
    marker = tmp_path / "code-ran"
    _plant_code(folder, kind, where, marker)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 8))  # what `yes | sds resume R` answers
    if where == "tokenizer_config" and kind != "clip":  # the tokenizer needs the code: refused in one sentence
        with pytest.raises(SdsError) as info:
            _build(kind, folder)
        _one_sentence(info, str(folder), "auto_map", "never runs")
    else:  # refused, and the folder loads without it: AutoConfig's entry is dropped, and CLIP's
        _build(kind, folder)  # model_type keeps transformers' own tokenizer class
    assert not marker.exists()
    assert sys.stdin.read() == "y\n" * 8  # nothing asked, nothing read
    assert "[y/N]" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("kind", "part"), [("sd", "unet"), ("sd", "vae"), ("sd", "text_encoder"), ("if", "text_encoder"), ("clip", "")]
)
def test_pickled_weights_load_only_when_allowed(published_model, tmp_path, kind, part) -> None:
    folder = _copy(published_model, kind, tmp_path)
    reference = _build(kind, folder)
    _pickle_weights(folder, part)
    option = "allow_pickled_weights" if kind == "clip" else "guidance.allow_pickled_weights"
    with pytest.raises(SdsError) as info:
        _build(kind, folder)
    _one_sentence(info, str(folder / part), "pickled", option)

    allowed = _build(kind, folder, allow_pickled_weights=True)
    module = {"unet": "unet", "vae": "vae", "": "model"}.get(part)
    if module is not None:  # the same tensors, through the pickle
        for key, value in getattr(reference, module).state_dict().items():
            torch.testing.assert_close(getattr(allowed, module).state_dict()[key], value)
    else:  # the text encoder is released after the prompt embeddings: they are the same
        torch.testing.assert_close(allowed.embeddings.table, reference.embeddings.table)


@pytest.mark.parametrize(
    ("kind", "part", "damage"),
    [
        ("sd", "text_encoder", "code"),
        ("sd", "unet", "code"),
        ("if", "text_encoder", "code"),
        ("clip", "", "code"),
        ("sd", "text_encoder", "truncated"),
        ("sd", "text_encoder", "not a pickle"),
        ("sd", "text_encoder", "bad safetensors"),
        ("sd", "unet", "bad safetensors"),
        ("clip", "", "bad safetensors"),
    ],
)
def test_a_hostile_or_damaged_weight_file_is_one_sentence(published_model, tmp_path, kind, part, damage) -> None:
    folder = _copy(published_model, kind, tmp_path)
    marker = tmp_path / "pickle-ran"
    if damage == "bad safetensors":
        _weights(folder, part).write_bytes(b"\xff" * 64)  # a header claiming more than the file holds
    else:
        pickled = _pickle_weights(folder, part)
        if damage == "code":
            torch.save({"weight": _Touch(marker)}, pickled)
        elif damage == "truncated":
            pickled.write_bytes(pickled.read_bytes()[:300])
        else:
            pickled.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(SdsError) as info:
        _build(kind, folder, allow_pickled_weights=True)
    _one_sentence(info, str(folder))
    assert not marker.exists()


SCRIPT = """
import sys
from tests.guidance.test_model_folder_safety import _build
from sds_core.errors import SdsError
for kind, folder in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        _build(kind, folder)
        print("built", flush=True)
    except SdsError as exc:
        print("SdsError:", exc, flush=True)
"""


def test_a_load_prints_nothing_but_the_one_sentence(published_model, tmp_path) -> None:
    """In a fresh process (the libraries' logging as a user's `sds` finds it): loads that succeed
    print nothing, a load that fails prints only the sentence the caller prints, and stdin's "y"
    is never read."""
    good = {kind: _copy(published_model, kind, tmp_path / "good") for kind in ("sd", "clip")}
    pickled = _copy(published_model, "sd", tmp_path / "pickled")
    _pickle_weights(pickled, "unet")
    coded = _copy(published_model, "sd", tmp_path / "coded")
    _plant_code(coded, "sd", "tokenizer_config", tmp_path / "code-ran")
    missing = "someone/not-downloaded-sd"  # a hub id offline: diffusers passes hub arguments it deprecates
    runs = [("sd", good["sd"]), ("clip", good["clip"]), ("sd", pickled), ("sd", coded), ("sd", missing)]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "SDS_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.update(HF_MODULES_CACHE=str(tmp_path / "hf-modules"), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "HF_HUB_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        env.pop(name, None)
    argv = [str(x) for run in runs for x in run]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *argv], input="y\n" * 8, capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[:2] == ["built", "built"]
    assert len(lines) == 5 and all(line.startswith("SdsError: ") for line in lines[2:]), done.stdout
    assert "guidance.allow_pickled_weights" in lines[2] and "auto_map" in lines[3] and missing in lines[4]
    assert not (tmp_path / "code-ran").exists()


def _imported_names(tree: ast.AST, library: str) -> set[str]:
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == library
        for alias in node.names
    }


def test_every_from_pretrained_in_the_packages_refuses_code_and_pickles() -> None:
    """Statically, over packages/*/src: every transformers `from_pretrained` passes
    trust_remote_code=False; every load of weights (a model class, of either library) passes
    use_safetensors (True unless the user allows pickles); only tokenizers, processors and
    schedulers (no weights) go without it."""
    calls = 0
    for path in sorted(ROOT.glob("packages/*/src/**/*.py")):
        tree = ast.parse(path.read_text(), str(path))
        transformers, diffusers = _imported_names(tree, "transformers"), _imported_names(tree, "diffusers")
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr != "from_pretrained":
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert isinstance(node.func.value, ast.Name), f"{where}: from_pretrained of a class named in the module"
            name = node.func.value.id
            assert name in transformers | diffusers, f"{where}: {name}.from_pretrained of an unknown library"
            keywords = {k.arg: k.value for k in node.keywords if k.arg is not None}
            if name in transformers:
                remote = keywords.get("trust_remote_code")
                assert isinstance(remote, ast.Constant) and remote.value is False, f"{where}: trust_remote_code=False"
            if not name.endswith(("Tokenizer", "Processor", "Scheduler")):
                assert "use_safetensors" in keywords, f"{where}: {name} loads weights without use_safetensors"
            calls += 1
    assert calls >= 9  # SD: scheduler, UNet, VAE, tokenizer, CLIP text; IF: tokenizer, T5; CLIP: model, processor
