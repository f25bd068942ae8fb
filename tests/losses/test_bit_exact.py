"""The losses give the existing DDPM backends the same gradients as before the noise-schedule
abstraction, bit for bit on the CPU (torch.equal).

Two references: a frozen copy of the old loss code (tests/losses/frozen, run in this process, so
the comparison holds on any machine), and the gradients the old code gave on the machine that
recorded tests/fixtures/gradients/loss_gradients.safetensors (record.py; compared bit for bit where
torch and the CPU's vector unit are that machine's, else to float32 rounding).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

import torch

from tests.losses.frozen import frozen_losses
from tests.losses.gradient_cases import MODELS, all_gradients, current_losses, gradients_of, guidance_for

RECORDED = Path(__file__).parents[1] / "fixtures" / "gradients" / "loss_gradients.safetensors"


@pytest.fixture(scope="module")
def gradients(published_model: Callable[[str], Path]) -> dict[str, dict[str, torch.Tensor]]:
    folders = {name: published_model(name) for name in MODELS}
    return {"today": all_gradients(folders, current_losses()), "frozen": all_gradients(folders, frozen_losses())}


def test_today_s_losses_equal_the_frozen_old_code(gradients) -> None:
    today, frozen = gradients["today"], gradients["frozen"]
    assert set(today) == set(frozen) and len(today) == 21  # 3 models x 7 cases
    for key in today:
        assert today[key].abs().max() > 1e-4, key
        assert torch.equal(today[key], frozen[key]), key


def test_the_other_ddpm_priors_equal_the_frozen_old_code(published_model, shapes_guidance) -> None:
    """SDXL (the SD path with added conditioning) and the exact `shapes` prior, against the frozen copy."""
    guidances = {"sdxl-base": guidance_for("sdxl-base", published_model("sdxl-base")), "shapes": shapes_guidance}
    # the LoRA copy is the UNet backends' (covered above); the shapes prior has no network to adapt
    losses = ("sds", "csd", "nfsd", "ism", "sjc", "vsd")
    today = gradients_of(guidances, current_losses(), losses)
    frozen = gradients_of(guidances, frozen_losses(), losses)
    assert len(today) == 12
    for key in today:
        assert today[key].abs().max() > 1e-6, key
        assert torch.equal(today[key], frozen[key]), key


def test_today_s_losses_equal_the_recorded_gradients(gradients) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(RECORDED), "pt") as handle:
        machine = json.loads(handle.metadata()["machine"])
    recorded = load_file(str(RECORDED))
    same_machine = machine == {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": __import__("platform").machine(),
    }
    today = gradients["today"]
    assert set(recorded) == set(today)
    for key, value in recorded.items():
        if same_machine:
            assert torch.equal(today[key], value), key
        else:  # another CPU kernel or torch rounds the UNet's float32 arithmetic differently
            torch.testing.assert_close(today[key], value, rtol=1e-4, atol=1e-5)
