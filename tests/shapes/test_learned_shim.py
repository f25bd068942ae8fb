"""`python -m sds_shapes.learned`, deprecated: one line saying so, then the trainer of
sds-shapes-learned with the same arguments; without that package, one sentence and exit 2."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

DEPRECATION = "python -m sds_shapes.learned is deprecated; use python -m sds_shapes_learned"


def test_the_old_command_says_where_the_trainer_went_when_it_is_not_installed(monkeypatch, capsys) -> None:
    from sds_shapes.learned import __main__ as shim

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == shim.NEW else real(name, *a))
    assert shim.main() == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 2 and lines[0] == DEPRECATION
    assert lines[1].startswith("error: ") and "sds-shapes-learned" in lines[1] and "Traceback" not in captured.err


def test_the_old_command_runs_the_new_trainer_with_its_arguments() -> None:
    pytest.importorskip("sds_shapes_learned")
    result = subprocess.run(
        [sys.executable, "-m", "sds_shapes.learned", "--steps", "many"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [DEPRECATION, "error: --steps takes <class 'int'>, not 'many'"]
