"""Regularisers: orientation loss (Ref-NeRF / A.2), opacity loss, annealed weights."""

from __future__ import annotations

import math

import torch

from sds_nerf.regularizers import annealed_weight, entropy_loss, opacity_loss, orientation_loss, reduce_rays


def test_orientation_loss_formula() -> None:
    # ray 0: two samples; ray 1: one sample; ray 2: none
    weights = torch.tensor([0.5, 0.25, 1.0], requires_grad=True)
    d = torch.tensor([[0.0, 0.0, -1.0]] * 3)
    normals = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.6, -0.8], [0.0, 0.0, 1.0]], requires_grad=True)
    rays = torch.tensor([0, 0, 1])
    per_ray = orientation_loss(weights, normals, d, rays, n_rays=3)
    # sum_i w_i max(0, n_i . d)^2 per ray: ray 0 = 0.5 * 1 + 0.25 * 0.64, ray 1 = 0, ray 2 = 0
    assert torch.allclose(per_ray, torch.tensor([0.5 + 0.25 * 0.64, 0.0, 0.0]))
    loss = reduce_rays(per_ray, batch_size=1)
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
    assert torch.allclose(opacity_loss(opacity), torch.tensor([0.1, math.sqrt(1.01)]))
    assert float(entropy_loss(torch.tensor([0.5]))) > float(entropy_loss(torch.tensor([0.99])))


def test_regularisers_are_summed_over_pixels_like_sds() -> None:
    """ "sum": each image's pixels summed, images averaged (as the SDS loss); "mean": over rays."""
    per_ray = torch.arange(8.0)  # two images of four pixels
    assert float(reduce_rays(per_ray, batch_size=2)) == 28.0 / 2
    assert float(reduce_rays(per_ray, batch_size=2, reduction="mean")) == 28.0 / 8


def test_a_regulariser_gradient_per_pixel_is_its_weight_as_sds_is() -> None:
    """With "sum", d(weight * opacity loss)/d(pixel) does not shrink with the image size."""
    from sds_core.protocols import Render
    from tests.nerf.helpers import sphere_generator

    grads = []
    for side in (4, 16):
        gen = sphere_generator(opacity_weight=1e-3, orientation_weight_start=0.0, orientation_weight_end=0.0)
        opacity = torch.full((1, 1, side, side), 0.5, requires_grad=True)
        render = Render(image=torch.zeros(1, 3, side, side), opacity=opacity)
        gen.regularizers(render, None, 0)["opacity"].backward()  # type: ignore[arg-type]
        assert opacity.grad is not None
        grads.append(float(opacity.grad[0, 0, 0, 0]))
    assert math.isclose(grads[0], grads[1]) and math.isclose(grads[0], 1e-3 * 0.5 / math.sqrt(0.26), rel_tol=1e-5)


def test_annealed_weight() -> None:
    assert annealed_weight(0, 1e-4, 1e-2, 5000) == 1e-4
    assert math.isclose(annealed_weight(2500, 1e-4, 1e-2, 5000), (1e-4 + 1e-2) / 2)
    assert annealed_weight(10000, 1e-4, 1e-2, 5000) == 1e-2
