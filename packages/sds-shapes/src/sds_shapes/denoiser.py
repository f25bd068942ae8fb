"""The exact denoiser of an empirical distribution under a variance-preserving schedule.

For references {x_i} and z_t = a x + s eps (a = sqrt(alpha-bar_t), s = sqrt(1 - alpha-bar_t)) the
minimum-MSE denoiser is
    x0_hat(z_t) = sum_i softmax_i(-|z_t - a x_i|^2 / 2 s^2) x_i,    eps_hat = (z_t - a x0_hat) / s.
|z_t - a x_i|^2 = |z_t|^2 - 2 a z_t.x_i + a^2 |x_i|^2 and |z_t|^2 does not depend on i, so the
logits are (a z_t.x_i - a^2 |x_i|^2 / 2) / s^2: one matrix product with cached norms. References
are centred on their mean first, which keeps those dot products small (float32 friendly).
A subset of references (the conditional set) is a mask on the same logits, so the conditional
and unconditional predictions come from one product for the logits and one for the means.
"""

from __future__ import annotations

import torch
from torch import Tensor

# weights below this are left out of the weighted mean: N * PRUNE stays under float32 resolution
PRUNE = 1e-12


class ExactDenoiser:
    """x0_hat and eps_hat over a fixed reference set, with optional per-sample subsets."""

    def __init__(self, references: Tensor, chunk_size: int = 4096) -> None:
        """references: (N, ...) in model space (e.g. RGB in [-1, 1])."""
        self.shape = references.shape[1:]
        flat = references.reshape(references.shape[0], -1).float()
        self.mean = flat.mean(0)
        self.centred = flat - self.mean
        self.norms = self.centred.pow(2).sum(1)  # cached |x_i - m|^2
        self.chunk_size = max(int(chunk_size), 1)

    @property
    def size(self) -> int:
        return int(self.centred.shape[0])

    def to(self, device: torch.device | str) -> ExactDenoiser:
        self.mean = self.mean.to(device)
        self.centred = self.centred.to(device)
        self.norms = self.norms.to(device)
        return self

    def _chunks(self) -> list[slice]:
        n, c = self.size, self.chunk_size
        return [slice(i, min(i + c, n)) for i in range(0, n, c)]

    def logits(self, z: Tensor, alpha_bar: Tensor) -> Tensor:
        """-|z - a x_i|^2 / 2 s^2 up to a per-sample constant, (B, N); alpha_bar is (B,)."""
        a = alpha_bar.sqrt().to(self.centred)[:, None]
        var = (1 - alpha_bar).to(self.centred)[:, None]
        zc = z.reshape(z.shape[0], -1).to(self.centred) - a * self.mean  # z - a m
        dots = torch.cat([zc @ self.centred[s].T for s in self._chunks()], dim=1)
        return (a * dots - 0.5 * a * a * self.norms) / var

    def weights(self, logits: Tensor, mask: Tensor | None = None) -> Tensor:
        """Softmax over the references (restricted to `mask` (B, N) when given)."""
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return torch.softmax(logits, dim=1)

    def mix(self, weights: Tensor) -> Tensor:
        """sum_i w_i x_i for weights (B, N), as (B, ...).

        The softmax of thousands of pixels is sharp: references whose weight is below
        `PRUNE` for every sample (their total contribution is below float32 resolution) are
        skipped, so that only the references that matter are read.
        """
        used = (weights > PRUNE).any(dim=0).nonzero().squeeze(1)
        if len(used) < self.size // 2:
            out = weights[:, used] @ self.centred.index_select(0, used)
        else:
            out = weights.new_zeros(weights.shape[0], self.centred.shape[1])
            for s in self._chunks():
                out = out + weights[:, s] @ self.centred[s]
        return (out + self.mean).view(-1, *self.shape)

    def x0(self, z: Tensor, alpha_bar: Tensor, masks: list[Tensor | None]) -> list[Tensor]:
        """x0_hat for each mask (None: every reference), sharing one logits product."""
        logits = self.logits(z, alpha_bar)
        stacked = torch.cat([self.weights(logits, m) for m in masks])
        return list(self.mix(stacked).split(z.shape[0]))

    def epsilon(self, z: Tensor, alpha_bar: Tensor, x0: Tensor) -> Tensor:
        """eps_hat = (z - a x0_hat) / s."""
        shape = (-1,) + (1,) * (z.dim() - 1)
        a = alpha_bar.sqrt().to(z.dtype).view(shape)
        s = (1 - alpha_bar).sqrt().to(z.dtype).view(shape)
        return (z - a * x0.to(z.dtype)) / s
