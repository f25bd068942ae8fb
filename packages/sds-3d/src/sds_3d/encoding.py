"""Positional encoding of points and directions, shared by 3D fields and backgrounds."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FrequencyEncoding(nn.Module):
    """gamma(x) = [x, sin(2^l x), cos(2^l x)], l = 0 .. L-1 (NeRF; DreamFusion A.2 uses L = 8).

    With a variance Sigma (isotropic), each band is damped by exp(-4^l Sigma / 2): mip-NeRF's
    integrated positional encoding of a Gaussian of covariance Sigma I (Barron et al. 2021, eq. 14).
    """

    scales: Tensor

    def __init__(self, in_dim: int = 3, frequencies: int = 8, include_input: bool = True) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.include_input = include_input
        self.register_buffer("scales", 2.0 ** torch.arange(frequencies, dtype=torch.float32), persistent=False)
        self.out_dim = in_dim * (2 * frequencies + int(include_input))

    def forward(self, x: Tensor, variance: float | Tensor | None = None) -> Tensor:
        scaled = x[..., None, :] * self.scales[:, None]  # (..., L, D)
        sin, cos = torch.sin(scaled), torch.cos(scaled)
        if variance is not None:
            damp = torch.exp(-0.5 * self.scales**2 * variance)[:, None]  # (L, 1)
            sin, cos = sin * damp, cos * damp
        feats = torch.cat([sin, cos], dim=-1).flatten(-2)
        return torch.cat([x, feats], dim=-1) if self.include_input else feats
