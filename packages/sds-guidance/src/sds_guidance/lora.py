"""VSD's eps_phi for the diffusers backends: the prior's UNet with LoRA adapters and a camera embedding.

ProlificDreamer (Wang et al. 2023, §4) models the distribution of the current renders with a LoRA
of the pretrained UNet whose timestep embedding also receives the camera. As threestudio's
`stable_diffusion_vsd_guidance.py`: LoRA on the attention projections (to_q, to_k, to_v, to_out)
of a copy of the UNet, the flattened 4 x 4 camera-to-world matrix through a diffusers
`TimestepEmbedding` set as the UNet's class embedding (added to the timestep embedding). The
adapters come from peft through diffusers' `add_adapter` (pip install "sds-guidance[vsd]").
Deviation: the camera embedding's last layer starts at zero (with peft's zero-initialised LoRA B
the copy starts as the prior exactly); the reference initialises it at random.
The copy is a second UNet in memory (the reference shares one when both models are the same).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from sds_core.api import SdsError
from sds_guidance._diffusers import epsilon_from_output, module_device


class LoraEpsilon(nn.Module):
    """eps_phi(x_t; y, t, c) from a LoRA copy of a diffusers backend's UNet (trainable: adapters + camera)."""

    def __init__(self, guidance: Any, rank: int, camera_dim: int) -> None:
        super().__init__()
        try:
            from peft import LoraConfig
        except ImportError as exc:
            raise SdsError('--loss vsd with a LoRA eps_phi needs peft; pip install "sds-guidance[vsd]"') from exc
        from diffusers.models.embeddings import TimestepEmbedding

        if getattr(guidance.unet, "_hf_hook", None) is not None:
            raise SdsError("--loss vsd cannot copy a CPU-offloaded UNet; set guidance.cpu_offload=false")
        unet = copy.deepcopy(guidance.unet)
        unet.requires_grad_(False)
        targets = ["to_q", "to_k", "to_v", "to_out.0"]
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets))
        camera = TimestepEmbedding(camera_dim, unet.time_embedding.linear_2.out_features)
        nn.init.zeros_(camera.linear_2.weight)
        nn.init.zeros_(camera.linear_2.bias)
        unet.class_embedding = camera.to(device=module_device(guidance.unet, guidance.device))
        for parameter in unet.parameters():  # adapters and camera embedding train in float32
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
        self.unet = unet
        self.dtype = guidance.dtype
        self.prediction_type = guidance.prediction_type
        self._alphas = guidance.alphas_cumprod()
        # the UNet's conditioning arguments (SDXL adds its pooled text and time ids); IF: the text alone
        self._inputs = getattr(guidance, "unet_inputs", lambda states: {"encoder_hidden_states": states})

    def forward(self, x_t: Tensor, t: Tensor, conditioning: Any, camera: Tensor) -> Tensor:
        device = module_device(self.unet, x_t.device)
        out = self.unet(
            x_t.to(device, self.dtype),
            t.to(device),
            class_labels=camera.to(device, torch.float32),
            **self._inputs(conditioning.cond.to(device, self.dtype)),
        ).sample.float()
        out = out[:, : x_t.shape[1]]  # IF: drop the variance half
        alphas = self._alphas.to(device)[t.to(device)]
        return epsilon_from_output(out, x_t.to(device, torch.float32), alphas, self.prediction_type).to(x_t.device)
