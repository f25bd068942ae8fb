"""Variational Score Distillation (ProlificDreamer, Wang et al., NeurIPS 2023).

g = w(t)(eps_hat(x_t; y, t) - eps_phi(x_t; y, t, c)): the frozen prior's guided prediction minus
that of a second model eps_phi of the distribution of the current renders, conditioned on the
camera c and trained alongside on those renders with the denoising loss
|| eps_phi(sqrt(a) sg(x) + sqrt(1 - a) eps'; y, t', c) - eps' ||^2, t' ~ U(0, T) (c dropped with
probability 0.1). Reference: threestudio-project/threestudio,
threestudio/models/guidance/stable_diffusion_vsd_guidance.py (`compute_grad_vsd`, `train_lora`:
w = 1 - alphas[t], guidance_scale 7.5, guidance_scale_lora 1, camera = the flattened c2w through a
TimestepEmbedding, lora lr 1e-4 in configs/prolificdreamer.yaml).

eps_phi is either the guidance's own network with LoRA adapters and a camera embedding
(`sds_core.protocols.TrainableCopy`, as the paper), or, for priors without a network to adapt (the
exact `shapes` prior) or by choice, the frozen prior's eps(x_t; y) plus a small convolutional
residual of (x_t, t, c) whose last layer starts at zero, so that eps_phi starts as the prior (as a
zero-initialised LoRA does). Its parameters are an optimiser group of their own (lr `phi_lr`) and
its weights are part of the checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from sds_core.losses.family_config import VSDConfig
from sds_core.protocols import BuildContext, CameraBatch, Guidance, LossOutput, TrainableCopy, require
from tests.losses.frozen.base import ScoreDistillation, add_noise
from tests.losses.frozen.guidance_combination import guided_noise

CAMERA_DIM = 16  # the flattened 4 x 4 camera-to-world matrix ("extrinsics" in the reference)


def timestep_features(t: Tensor, dim: int = 32) -> Tensor:
    """Sinusoidal features of integer timesteps (DDPM's embedding), (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResidualEpsilon(nn.Module):
    """A small FiLM-conditioned conv net: the trainable part of eps_phi for any prior.

    Written in plain torch: sds-core does not depend on diffusers, and three convolutions suffice
    to model what the renders add to the prior's prediction on the CPU-sized images of the tests.
    """

    def __init__(self, channels: int, width: int, camera_dim: int = CAMERA_DIM) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(32 + camera_dim, width * 2), nn.SiLU(), nn.Linear(width * 2, width * 2))
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.conv_mid = nn.Conv2d(width, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)  # type: ignore[arg-type]

    def forward(self, x_t: Tensor, t: Tensor, camera: Tensor) -> Tensor:
        scale, shift = self.embed(torch.cat([timestep_features(t), camera], dim=1)).chunk(2, dim=1)
        h = nn.functional.silu(self.conv_in(x_t))
        h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        h = nn.functional.silu(self.conv_mid(h))
        return self.conv_out(h)


class VSDLoss(ScoreDistillation):
    name = "vsd"
    config: VSDConfig

    def __init__(self, config: VSDConfig, context: BuildContext) -> None:
        super().__init__(config, context)
        guidance = context.guidance
        kind = config.phi
        if kind == "auto":
            kind = "lora" if isinstance(guidance, TrainableCopy) else "residual"
        self.kind = kind
        if kind == "lora":
            require(guidance, TrainableCopy, "vsd", "a trainable copy of its noise predictor for phi=lora")
            self.phi: nn.Module = guidance.trainable_copy(config.lora_rank, CAMERA_DIM)  # type: ignore[union-attr]
        else:
            if guidance is None:
                raise ValueError("the vsd loss is built with its guidance (BuildContext.guidance)")
            self.phi = ResidualEpsilon(guidance.channels, config.residual_width)
        self.phi.to(context.device)

    # --- what the loop asks of a loss with state (sds_core.protocols.TrainableLoss) --------------

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.phi.parameters() if p.requires_grad], "lr": self.config.phi_lr}]

    def _trainable(self) -> dict[str, Tensor]:
        return {name: p for name, p in self.phi.named_parameters() if p.requires_grad}

    def state_dict(self) -> dict[str, Any]:
        """eps_phi's trainable tensors only (a LoRA copy's frozen UNet is the prior's)."""
        return {"phi": {name: p.detach().clone() for name, p in self._trainable().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        trainable = self._trainable()
        if set(state["phi"]) != set(trainable):
            raise ValueError("the checkpoint's eps_phi does not match this run's (vsd.phi or lora_rank changed?)")
        with torch.no_grad():
            for name, value in state["phi"].items():
                trainable[name].copy_(value)

    # --- eps_phi ----------------------------------------------------------------------------------

    def camera(self, x: Tensor, cameras: CameraBatch | None) -> Tensor:
        """(B, 16) flattened camera-to-world matrices, zeros without cameras."""
        if cameras is None or cameras.batch_size != x.shape[0]:
            return x.new_zeros(x.shape[0], CAMERA_DIM)
        return cameras.c2w.reshape(x.shape[0], -1).to(device=x.device, dtype=torch.float32)

    def eps_phi(
        self, x_t: Tensor, t: Tensor, guidance: Guidance, conditioning: Any, camera: Tensor, base: Tensor | None = None
    ) -> Tensor:
        """eps_phi(x_t; y, t, c); `base` is the prior's eps(x_t; y) when already computed."""
        if self.kind == "lora":
            return self.phi(x_t, t, conditioning, camera).float()  # type: ignore[no-any-return]
        if base is None:
            with torch.no_grad():
                base = guidance.predict_noise(x_t, t, conditioning).cond.float()
        return base + self.phi(x_t, t, camera)

    def direction(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> Tensor:
        """eps_hat(x_t; y, t) - eps_phi(x_t; y, t, c)."""
        x_t = add_noise(x, noise, self.alphas(guidance, x)[t])
        prediction = guidance.predict_noise(x_t, t, conditioning)
        eps_hat = guided_noise(prediction, self.guidance_scale(guidance)).float()
        return eps_hat - self.eps_phi(
            x_t, t, guidance, conditioning, self.camera(x, cameras), base=prediction.cond.float()
        )

    def phi_loss(self, x: Tensor, guidance: Guidance, conditioning: Any, cameras: CameraBatch | None = None) -> Tensor:
        """eps_phi's denoising loss on the detached renders, t' ~ U(0, T - 1), camera dropped at p 0.1."""
        batch = x.shape[0]
        t = torch.randint(0, guidance.num_train_timesteps, (batch,)).to(x.device)
        noise = torch.randn(x.shape, dtype=torch.float32).to(x.device)
        keep = (torch.rand(batch) >= self.config.camera_dropout).to(x.device, torch.float32)
        camera = self.camera(x, cameras) * keep[:, None]
        x_t = add_noise(x.detach().float(), noise, self.alphas(guidance, x)[t])
        return (self.eps_phi(x_t, t, guidance, conditioning, camera) - noise).pow(2).mean()

    def compute(
        self,
        x: Tensor,
        guidance: Guidance,
        conditioning: Any,
        t: Tensor,
        noise: Tensor,
        cameras: CameraBatch | None = None,
    ) -> LossOutput:
        out = super().compute(x, guidance, conditioning, t, noise, cameras)
        phi = self.phi_loss(x, guidance, conditioning, cameras)
        out.terms["vsd_phi"] = float(phi.detach())
        return LossOutput(loss=out.loss + self.config.phi_weight * phi, terms=out.terms, t=out.t)
