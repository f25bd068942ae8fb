"""Input encodings of the field: (integrated) positional encoding (`sds_3d.encoding`), a multiresolution hash grid."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sds_3d.encoding import FrequencyEncoding as FrequencyEncoding  # the field's encodings in one place

# Instant-NGP's spatial hash primes (Müller et al. 2022, eq. 4).
_PRIMES = (1, 2654435761, 805459861)


class HashGridEncoding(nn.Module):
    """Instant-NGP's multiresolution hash encoding in plain PyTorch (CPU or any device).

    Hand-rolled because tinycudann needs CUDA and a compiler; this one runs everywhere and is
    differentiable twice (autograd normals). Inputs are in [0, 1]^3; levels whose dense grid fits
    the table are indexed densely, the finer ones through the spatial hash.
    """

    resolutions: Tensor
    sizes: Tensor
    offsets: Tensor
    dense: Tensor
    corners: Tensor

    def __init__(
        self,
        levels: int = 16,
        features: int = 2,
        log2_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 1024,
    ) -> None:
        super().__init__()
        self.levels, self.features = levels, features
        self.table_size = 2**log2_size
        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(levels - 1, 1))
        resolutions = [math.floor(base_resolution * growth**lvl) for lvl in range(levels)]
        sizes = [min((r + 1) ** 3, self.table_size) for r in resolutions]
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.float32), persistent=False)
        self.register_buffer("sizes", torch.tensor(sizes, dtype=torch.long), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets[:-1], dtype=torch.long), persistent=False)
        self.register_buffer("dense", torch.tensor([(r + 1) ** 3 <= self.table_size for r in resolutions]), False)
        corners = torch.tensor([[(c >> i) & 1 for i in range(3)] for c in range(8)], dtype=torch.long)
        self.register_buffer("corners", corners, persistent=False)
        # Instant-NGP initialises the table uniformly in [-1e-4, 1e-4].
        self.table = nn.Parameter(torch.empty(offsets[-1], features).uniform_(-1e-4, 1e-4))
        self.out_dim = levels * features

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape[:-1]
        x = x.reshape(-1, 3).clamp(0.0, 1.0)
        pos = x[:, None, :] * self.resolutions[:, None]  # (N, L, 3)
        base = torch.floor(pos)
        frac = pos - base  # differentiable in x
        idx = base.long()[:, :, None, :] + self.corners  # (N, L, 8, 3)
        res1 = self.resolutions.long() + 1  # (L,)
        dense_index = idx[..., 0] + res1[:, None] * (idx[..., 1] + res1[:, None] * idx[..., 2])
        hashed = (idx[..., 0] * _PRIMES[0]) ^ (idx[..., 1] * _PRIMES[1]) ^ (idx[..., 2] * _PRIMES[2])
        index = torch.where(self.dense[:, None], dense_index, hashed) % self.sizes[:, None] + self.offsets[:, None]
        corner = self.corners.to(x.dtype)  # (8, 3)
        weights = torch.where(corner.bool(), frac[:, :, None, :], 1.0 - frac[:, :, None, :]).prod(-1)  # (N, L, 8)
        feats = self.table[index]  # (N, L, 8, F)
        out = (weights[..., None] * feats).sum(-2)  # (N, L, F)
        return out.reshape(*shape, self.out_dim)


class TcnnHashGridEncoding(nn.Module):
    """The same encoding through tinycudann's fused CUDA kernels (used only when installed)."""

    def __init__(self, levels: int, features: int, log2_size: int, base_resolution: int, max_resolution: int) -> None:
        super().__init__()
        import tinycudann as tcnn  # type: ignore[import-not-found]

        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(levels - 1, 1))
        self.encoding = tcnn.Encoding(
            3,
            {
                "otype": "HashGrid",
                "n_levels": levels,
                "n_features_per_level": features,
                "log2_hashmap_size": log2_size,
                "base_resolution": base_resolution,
                "per_level_scale": growth,
            },
        )
        self.out_dim = levels * features

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape[:-1]
        return self.encoding(x.reshape(-1, 3)).float().reshape(*shape, self.out_dim)


def tcnn_available() -> bool:
    try:
        import tinycudann  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def annealed_variance(step: int, start: float, end: float, steps: int) -> float:
    """IPE Sigma at `step`: linear from `start` to `end` over `steps` (A.2), then `end`."""
    frac = min(max(step, 0) / max(steps, 1), 1.0)
    return start + frac * (end - start)
