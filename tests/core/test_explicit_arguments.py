"""What a plugin gets from the loop comes as arguments, not side channels: learning rates through
`param_groups` (`lr_scale`) and `ScheduledLearningRates`, the batch's cameras as the loss's
argument, and retired options through one deprecation line. sds-core's own plugins load through
its entry point like every other package's."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from sds_core.hookspecs import hookimpl
from sds_core.lifecycle import start_run
from sds_core.plugins import PluginSpec, load_catalog
from sds_core.protocols import CameraBatch, LossOutput, Render, ScheduledLearningRates
from sds_core.resolve import resolve_config
from tests.conftest import TargetPlugin

NAMES = {"generator": "two-groups", "guidance": "target", "loss": "recording"}


@dataclass
class TwoGroupsConfig:
    side: int = 8
    color_scale: float = 0.25
    schedule_b: bool = False


class TwoGroups(nn.Module):
    """An image in two parameter groups: `a` at optim.lr x color_scale, `b` at optim.lr or, with
    schedule_b, on its own schedule 1 / (step + 1)."""

    view_dependent = True

    def __init__(self, config: TwoGroupsConfig, context: Any) -> None:
        super().__init__()
        self.cfg = config
        self.a = nn.Parameter(torch.zeros(1, 3, config.side, config.side))
        self.b = nn.Parameter(torch.zeros(1, 3, config.side, config.side))

    def render(self, cameras: CameraBatch, step: int) -> Render:
        image = torch.sigmoid(self.a + self.b).expand(cameras.batch_size, -1, -1, -1)
        return Render(image=image)

    def regularizers(self, render: Render, cameras: CameraBatch, step: int) -> dict[str, torch.Tensor]:
        return {}

    def param_groups(self) -> list[dict[str, Any]]:
        return [
            {"params": [self.a], "lr_scale": self.cfg.color_scale, "name": "a"},
            {"params": [self.b], "name": "b"},
        ]

    def learning_rate(self, group: str, step: int) -> float | None:
        return 1.0 / (step + 1) if self.cfg.schedule_b and group == "b" else None

    def preview(self, cameras: CameraBatch, step: int, shading: str | None = None) -> torch.Tensor:
        return self.render(cameras, step).image.detach()

    def export(self, out_dir: Any, context: Any) -> list[Any]:
        return []


@dataclass
class RecordingConfig:
    pass


class RecordingLoss:
    """Records the cameras each call receives; the loss pulls the image towards grey."""

    seen: ClassVar[list[CameraBatch | None]] = []

    def __init__(self, config: RecordingConfig, context: Any) -> None:
        pass

    def __call__(
        self, x: torch.Tensor, guidance: Any, conditioning: Any, step: int, cameras: CameraBatch | None = None
    ) -> LossOutput:
        RecordingLoss.seen.append(cameras)
        loss = (x - 0.5).pow(2).mean()
        return LossOutput(loss=loss, terms={"recording": float(loss.detach())}, t=0.5)


class ExtraPlugin:
    @hookimpl
    def sds_register_generators(self, registry: Any) -> None:
        registry.add(
            PluginSpec(
                "two-groups",
                TwoGroups,
                TwoGroupsConfig,
                "two groups",
                retired={"old_option": "it never did anything; remove it"},
            )
        )

    @hookimpl
    def sds_register_losses(self, registry: Any) -> None:
        registry.add(PluginSpec("recording", RecordingLoss, RecordingConfig, "records its cameras"))


@pytest.fixture
def catalog():
    plugins = {"target-plugin": (TargetPlugin(), "sds-tests", "0"), "extra": (ExtraPlugin(), "sds-tests", "0")}
    return load_catalog(extra_plugins=plugins)


def run(tmp_path, catalog, steps: int = 3, **generator: Any):
    overrides = {
        "run": {"steps": steps, "preview_every": 0, "checkpoint_every": 0},
        "cameras": {"width": 8, "height": 8, "batch_size": 2},
        "optim": {"lr": 0.1, "schedule": "constant"},
        "generator": generator,
    }
    trainer = start_run("x", tmp_path / "run", "draft", overrides, NAMES, "cpu", [], catalog)
    trainer.run()
    return trainer


def test_lr_scale_is_a_multiple_of_optim_lr(tmp_path, catalog) -> None:
    trainer = run(tmp_path, catalog)
    lrs = {group["name"]: group["lr"] for group in trainer.optimizer.param_groups}
    assert lrs == {"a": pytest.approx(0.1 * 0.25), "b": pytest.approx(0.1)}
    assert all("lr_scale" not in group for group in trainer.optimizer.param_groups)


def test_a_generator_schedules_its_own_groups(tmp_path, catalog) -> None:
    trainer = run(tmp_path, catalog, steps=4, schedule_b=True)
    assert isinstance(trainer.generator, ScheduledLearningRates)
    groups = {group["name"]: group for group in trainer.optimizer.param_groups}
    assert groups["b"]["lr"] == pytest.approx(1.0 / 4)  # step 3, the last one taken
    assert groups["b"]["base_lr"] == pytest.approx(1.0 / 4)
    assert groups["a"]["lr"] == pytest.approx(0.1 * 0.25)  # None: the group's own rate


def test_the_loss_receives_the_batch_cameras(tmp_path, catalog) -> None:
    RecordingLoss.seen.clear()
    run(tmp_path, catalog, steps=2)
    assert len(RecordingLoss.seen) == 2
    assert all(isinstance(c, CameraBatch) and c.batch_size == 2 for c in RecordingLoss.seen)


def test_a_retired_option_still_resolves_with_one_deprecation_line(catalog) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolved = resolve_config(catalog, preset="draft", overrides={"generator": {"old_option": 3}}, names=NAMES)
    lines = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert lines == ["generator.old_option is deprecated and ignored: it never did anything; remove it"]
    assert "old_option" not in resolved.tree["generator"]


def test_sds_core_registers_its_plugins_through_its_own_entry_point() -> None:
    (core,) = [ep for ep in entry_points(group="sds") if ep.name == "core"]
    assert core.value == "sds_core.core_plugin" and core.dist is not None and core.dist.name == "sds-core"
    catalog = load_catalog()
    assert catalog.registries["loss"].get("sds").provider == "sds-core"
    assert catalog.registries["generator"].get("image").provider == "sds-core"
    blocked = load_catalog(environ={"SDS_BLOCK_PLUGINS": "core"})
    assert "sds" not in blocked.registries["loss"] and "image" not in blocked.registries["generator"]
