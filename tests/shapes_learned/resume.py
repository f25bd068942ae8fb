"""The check the trainers' resume tests share: a run stopped and resumed is the uninterrupted one."""

from __future__ import annotations

from typing import Any

import torch


def assert_resumed_exactly(whole: Any, resumed: Any, steps: int) -> None:
    """`resumed` (a Trainer stopped and continued) reached `steps` with `whole`'s log, its denoiser's
    and its encoder's weights bit for bit, and its losses."""
    assert resumed is not None and resumed.step == steps
    assert [e["step"] for e in resumed.log] == list(range(1, steps + 1))
    for a, b in zip(whole.unet.parameters(), resumed.unet.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(whole.encoder.parameters(), resumed.encoder.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [e["mse"] for e in whole.log] == [e["mse"] for e in resumed.log]
