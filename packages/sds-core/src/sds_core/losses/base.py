"""What every loss of the SDS family shares (DreamFusion §3.2 and its descendants).

Each step: draw t and eps, ask the frozen prior for noise predictions without tracking gradients,
turn them into a per-pixel update direction g, and return loss = 1/2 || x - sg(x - g) ||^2, whose
gradient on x is exactly g (divided by the batch size: the loss is a batch mean). A loss of the
family only says how g is made (`direction`) and how it is weighted over t (`weight`).

Noising, the reading of predictions (eps, x0, a flow's velocity) and w(t) are the guidance's noise
schedule's (`sds_core.schedules.schedule_of`: DDPM's VP schedule, or a flow's); a loss that cannot
serve a kind of schedule says so in one sentence when it is built (`serves`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sds_core.errors import ConfigError
from sds_core.losses.sds_config import SDSConfig
from sds_core.protocols import BuildContext, CameraBatch, Guidance, LossOutput, NoiseSchedule
from sds_core.schedules import (
    add_noise,
    broadcast,
    ddim_step,
    require_schedule,
    sample_timesteps,
    schedule_of,
    timestep_bounds,
)

__all__ = ["ScoreDistillation", "add_noise", "broadcast", "ddim_step"]


class ScoreDistillation:
    """The shared machinery; subclasses implement `direction` (and may change `weight`)."""

    #: the name of the loss term in metrics.jsonl (`<name>` and `<name>_grad_norm`)
    name = "sds"

    #: the schedule kinds this loss serves, and why not the others (one clause, for `serves`)
    kinds: tuple[str, ...] = ("ddpm", "flow")
    refusal = ""
    #: whether g needs the conditional and unconditional predictions apart (CFG's two branches),
    #: which a guidance-distilled prior (`distilled_guidance`: FLUX.1-dev) does not make
    needs_branches = False

    def __init__(self, config: SDSConfig, context: BuildContext) -> None:
        self.config = config
        self.total_steps = context.total_steps
        if context.guidance is not None:
            self.serves(context.guidance)

    def serves(self, guidance: Guidance) -> None:
        """ConfigError (one sentence) when this loss cannot serve the guidance's kind of schedule."""
        require_schedule(schedule_of(guidance, torch.zeros(())), self.kinds, self.name, self.refusal)
        if self.needs_branches and getattr(guidance, "distilled_guidance", False):
            raise ConfigError(
                f"the {self.name!r} loss needs the conditional and unconditional predictions apart, which the "
                f"guidance-distilled {type(guidance).__name__} does not make; "
                "set guidance.cfg_mode=true-cfg or use --loss sds"
            )

    def schedule(self, guidance: Guidance, like: Tensor) -> NoiseSchedule:
        """The guidance's noise schedule, its tensors float32 on the device of `like`."""
        return schedule_of(guidance, like)

    def guidance_scale(self, guidance: Guidance) -> float:
        scale = self.config.guidance_scale
        return float(guidance.default_guidance_scale if scale is None else scale)

    def sample_t(self, batch_size: int, guidance: Guidance, step: int, device: torch.device) -> Tensor:
        cfg = self.config
        bounds = timestep_bounds(step, self.total_steps, cfg.t_range, cfg.t_schedule, cfg.t_max_end, cfg.anneal_steps)
        return sample_timesteps(batch_size, bounds, guidance.num_train_timesteps, device)

    def weight(self, schedule: NoiseSchedule, t: Tensor) -> Tensor:
        """w(t) per sample, from the schedule's scales (`config.weighting`)."""
        return schedule.weight(t, self.config.weighting)

    def direction(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> Tensor:
        """The unweighted update direction for x (float32, detached), e.g. eps_hat - eps for SDS
        (v_hat - (eps - x) on a flow)."""
        raise NotImplementedError

    def gradient(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> Tensor:
        """g = w(t) * direction for given t and eps, computed without tracking gradients."""
        with torch.no_grad():
            weight = self.weight(self.schedule(guidance, x), t)
            direction = self.direction(x.detach().float(), guidance, conditioning, t, noise, cameras)
            grad = broadcast(weight, x) * direction
            grad = torch.nan_to_num(grad)
            if self.config.grad_clip is not None:
                grad = grad.clamp(-self.config.grad_clip, self.config.grad_clip)
        return grad

    def compute(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> LossOutput:
        grad = self.gradient(x, guidance, conditioning, t, noise, cameras)
        target = (x.float() - grad).detach()
        loss = 0.5 * (x.float() - target).pow(2).sum() / x.shape[0]
        terms = {self.name: float(loss.detach()), f"{self.name}_grad_norm": float(grad.norm() / x.shape[0])}
        t_frac = float(t.float().mean()) / guidance.num_train_timesteps
        return LossOutput(loss=loss, terms=terms, t=t_frac)

    def __call__(
        self, x: Tensor, guidance: Guidance, conditioning: Any, step: int, cameras: CameraBatch | None = None
    ) -> LossOutput:
        t = self.sample_t(x.shape[0], guidance, step, x.device)
        noise = torch.randn(x.shape, dtype=torch.float32).to(x.device)
        return self.compute(x, guidance, conditioning, t, noise, cameras)
