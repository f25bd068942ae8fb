"""`gaussians.ply`, the standard 3DGS point cloud of final/ (Kerbl et al. 2023's `save_ply`,
read by common splat viewers): float properties x, y, z, nx, ny, nz (zeros), f_dc_0..2 (SH degree-0
coefficients, colour = 0.5 + C0 f_dc), f_rest_0..44 (zeros: degree 3 layout, so loaders that
expect it read the file), opacity (logit), scale_0..2 (log), rot_0..3 (w, x, y, z). Positions stay
in sds's z-up world (splat files carry no up convention). The rest of final/ is `sds_3d.final`'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sds_core.api import atomic_write
from sds_gaussians.gaussians import GaussianModel

SH_C0 = 0.28209479177387814  # Y_0^0: colour = 0.5 + SH_C0 * f_dc (3DGS's RGB2SH / SH2RGB)
PLY_REST = 45  # f_rest_* of SH degree 3 (3 x 15), zeros here


def ply_bytes(g: GaussianModel) -> bytes:
    """The standard 3DGS PLY (binary little endian) of the Gaussians."""
    with torch.no_grad():
        means = g.means.detach().float().cpu().numpy()
        f_dc = ((g.colors().detach().float().cpu().numpy()) - 0.5) / SH_C0
        opacity = g.opacity_logits.detach().float().cpu().numpy()[:, None]
        scales = g.log_scales.detach().float().cpu().numpy()
        quats = torch.nn.functional.normalize(g.quats.detach().float(), dim=-1).cpu().numpy()
    names = ["x", "y", "z", "nx", "ny", "nz", *(f"f_dc_{i}" for i in range(3))]
    names += [f"f_rest_{i}" for i in range(PLY_REST)]
    names += ["opacity", *(f"scale_{i}" for i in range(3)), *(f"rot_{i}" for i in range(4))]
    n = len(means)
    columns = [means, np.zeros((n, 3)), f_dc, np.zeros((n, PLY_REST)), opacity, scales, quats]
    data = np.concatenate(columns, axis=1).astype("<f4")
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + data.tobytes()


def write_ply(out_dir: Path, g: GaussianModel) -> list[Path]:
    """OUT_DIR/gaussians.ply, written atomically."""
    return [atomic_write(out_dir / "gaussians.ply", ply_bytes(g))]
