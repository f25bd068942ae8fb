"""Regularisers: orientation loss (Ref-NeRF / A.2), opacity loss, annealed weights."""

from __future__ import annotations

import math

import torch

from sds_nerf.regularizers import annealed_weight, entropy_loss, opacity_loss, orientation_loss


def test_orientation_loss_formula() -> None:
    # ray 0: two samples; ray 1: one sample; ray 2: none
    weights = torch.tensor([0.5, 0.25, 1.0], requires_grad=True)
    d = torch.tensor([[0.0, 0.0, -1.0]] * 3)
    normals = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.6, -0.8], [0.0, 0.0, 1.0]], requires_grad=True)
    rays = torch.tensor([0, 0, 1])
    loss = orientation_loss(weights, normals, d, rays, n_rays=3)
    # sum_i w_i max(0, n_i . d)^2 per ray: ray 0 = 0.5 * 1 + 0.25 * 0.64, ray 1 = 0, ray 2 = 0
    assert math.isclose(float(loss.detach()), (0.5 + 0.25 * 0.64) / 3, rel_tol=1e-6)
    loss.backward()
    assert weights.grad is None or torch.all(weights.grad == 0)  # stop-gradient on w
    assert normals.grad is not None and normals.grad[2].abs().sum() == 0  # facing the camera: no penalty


def test_orientation_penalises_only_back_facing_normals() -> None:
    d = torch.tensor([[1.0, 0.0, 0.0]])
    back = orientation_loss(torch.ones(1), torch.tensor([[1.0, 0.0, 0.0]]), d, torch.zeros(1, dtype=torch.long), 1)
    front = orientation_loss(torch.ones(1), torch.tensor([[-1.0, 0.0, 0.0]]), d, torch.zeros(1, dtype=torch.long), 1)
    assert float(back) == 1.0 and float(front) == 0.0


def test_opacity_and_entropy() -> None:
    opacity = torch.tensor([0.0, 1.0])
    assert math.isclose(float(opacity_loss(opacity)), (0.1 + math.sqrt(1.01)) / 2, rel_tol=1e-6)
    assert float(entropy_loss(torch.tensor([0.5]))) > float(entropy_loss(torch.tensor([0.99])))


def test_annealed_weight() -> None:
    assert annealed_weight(0, 1e-4, 1e-2, 5000) == 1e-4
    assert math.isclose(annealed_weight(2500, 1e-4, 1e-2, 5000), (1e-4 + 1e-2) / 2)
    assert annealed_weight(10000, 1e-4, 1e-2, 5000) == 1e-2
