"""The noise schedules the losses work through (sds_core.schedules): DDPM's VP schedule and flow matching."""

from __future__ import annotations

import pytest
import torch

from sds_core.errors import ConfigError
from sds_core.protocols import NoiseSchedule
from sds_core.schedules import FlowSchedule, VPSchedule, require_schedule, schedule_of
from tests.conftest import TargetConfig, TargetGuidance, sd_alphas_cumprod


def test_a_ddpm_guidance_gets_the_vp_schedule_of_its_alphas() -> None:
    guidance = TargetGuidance(TargetConfig())
    schedule = schedule_of(guidance, torch.zeros(()))
    assert isinstance(schedule, VPSchedule) and isinstance(schedule, NoiseSchedule)
    assert schedule.kind == "ddpm" and schedule.num_train_timesteps == 1000
    x, eps, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.tensor([50, 900])
    x_t = schedule.add_noise(x, eps, t)
    a = sd_alphas_cumprod()[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, a.sqrt() * x + (1 - a).sqrt() * eps)
    torch.testing.assert_close(schedule.x0(eps, x_t, t), x)
    assert schedule.epsilon(eps, x_t, t) is eps and schedule.target(x, eps) is eps
    up = schedule.step(x_t, eps, t, torch.tensor([600, 999]))  # DDIM with the exact eps stays on the path
    torch.testing.assert_close(up, schedule.add_noise(x, eps, torch.tensor([600, 999])))
    torch.testing.assert_close(schedule.weight(t, "sds"), 1 - a.flatten())


def test_the_flow_step_is_flow_match_euler_s() -> None:
    """FlowSchedule.step from t to t' is FlowMatchEulerDiscreteScheduler.step between the same sigmas."""
    pytest.importorskip("diffusers")
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    schedule = FlowSchedule(scheduler.sigmas.flip(0))
    scheduler.set_timesteps(sigmas=[0.9, 0.6])  # unshifted, as the pipelines pass them: (t + 1) / T
    x, v = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    # the scheduler's first step goes from shifted 0.9 (t = 899) to shifted 0.6 (t = 599)
    expected = scheduler.step(v, scheduler.timesteps[0], x).prev_sample
    torch.testing.assert_close(schedule.step(x, v, torch.tensor([899]), torch.tensor([599])), expected)


def test_a_guidance_without_a_schedule_and_a_refused_kind_are_one_sentence() -> None:
    class NoSchedule:
        pass

    with pytest.raises(ConfigError, match="has no noise schedule"):
        schedule_of(NoSchedule(), torch.zeros(()))
    with pytest.raises(ConfigError, match=r"^the 'sjc' loss cannot serve a flow guidance: why; use another --loss$"):
        require_schedule(FlowSchedule(torch.linspace(0.001, 1, 1000)), ("ddpm",), "sjc", "why")
