"""Options of the SDS family beyond `sds` (no torch: read by `sds plugins`).

Every config extends `SDSConfig` (guidance scale, weighting, timestep range and schedule, clip).
`guidance_scale` is DreamFusion's omega in eps_0 + (1 + omega)(eps_y - eps_0) unless said
otherwise; a paper's "7.5" in the diffusers convention (eps_0 + 7.5 (eps_y - eps_0)) is omega 6.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sds_core.losses.sds_config import SDSConfig


@dataclass
class CSDConfig(SDSConfig):
    """Classifier Score Distillation (Yu et al. 2023): w(t)(eps_y - eps_0) only."""

    # the scale of the classifier score (the reference's cond_scale 1.0); None: the guidance's omega
    guidance_scale: float | None = 1.0
    weighting: Literal["sds", "uniform", "ism"] = "uniform"  # the reference configs (csd-if.yaml) use uniform weighting
    # divide g by its norm over the batch (the reference DeepFloyd guidance's grad_normalize)
    normalize: bool = False


@dataclass
class NFSDConfig(SDSConfig):
    """Noise-Free Score Distillation (Katzir et al., ICLR 2024): w(t)(delta_D + s delta_C)."""

    guidance_scale: float | None = 7.5  # s in delta_D + s delta_C (the paper's 7.5)
    # delta_D = eps_0 - eps_neg for t >= 200, eps_0 below (the paper's switch)
    t_switch: int = 200
    # the paper's negative prompt
    negative_prompt: str = (
        "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, low-resolution, gloomy"
    )


@dataclass
class ISMConfig(SDSConfig):
    """Interval Score Matching (LucidDreamer, Liang et al. CVPR 2024): w(t)(eps_s(x_t, t) - eps_0(x_s, s))."""

    guidance_scale: float | None = 6.5  # the paper's CFG 7.5 (diffusers convention) as omega
    weighting: Literal["sds", "uniform", "ism"] = "ism"  # w(t) = sqrt((1 - a_t) / a_t)
    delta_t: int = 80  # s = t - delta_t (LucidDreamer's default interval)
    xs_delta_t: int = 200  # DDIM inversion stride towards s
    xs_inv_steps: int = 5  # DDIM inversion steps towards s (at most)


@dataclass
class SJCConfig(SDSConfig):
    """Score Jacobian Chaining (Wang et al., CVPR 2023), as threestudio's `compute_grad_sjc`."""

    weighting: Literal["sds", "uniform", "ism"] = (
        "uniform"  # SJC has no w(t): the score is the denoiser residual over sigma
    )
    # variance reduction: -(D(z) - x) / sigma instead of -(D(z) - z) / sigma (threestudio's var_red)
    var_red: bool = True


@dataclass
class VSDConfig(SDSConfig):
    """Variational Score Distillation (ProlificDreamer, Wang et al., NeurIPS 2023)."""

    guidance_scale: float | None = 6.5  # the paper's CFG 7.5 (diffusers convention) as omega
    # eps_phi: "auto" takes "lora" when the guidance can make a trainable copy of its network
    # (sds_core.protocols.TrainableCopy), else "residual": eps_y of the frozen prior plus a small
    # network of (x_t, t, camera) whose last layer starts at zero
    phi: Literal["auto", "lora", "residual"] = "auto"
    phi_lr: float = 1e-4  # threestudio's prolificdreamer.yaml: guidance (LoRA) lr 1e-4
    lora_rank: int = 4  # the rank of the LoRA (diffusers' LoRAAttnProcessor default in the reference)
    residual_width: int = 32  # channels of the residual network
    camera_dropout: float = 0.1  # the camera condition is zeroed with this probability when training eps_phi
    phi_weight: float = 1.0  # weight of eps_phi's denoising loss in the total
