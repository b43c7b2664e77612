"""Gradients of :func:`reidkit.sinkhorn`: gradcheck for every mode and cross-mode agreement."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given

from reidkit import sinkhorn
from reidkit.ot import implicit
from reidkit.ot.implicit import transport_cost
from tests.ot.strategies import TIGHT, ot_problems, regularised_value


def _problem(seed: int, batch: int = 2, m: int = 5, n: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, m, n, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("grad", ["implicit", "unrolled"])
def test_distance_passes_gradcheck(grad: str) -> None:
    cost = _problem(0).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda c: sinkhorn(c, epsilon=0.3, grad=grad, **TIGHT).distance, (cost,)
    )


@pytest.mark.parametrize("grad", ["implicit", "unrolled"])
def test_plan_passes_gradcheck(grad: str) -> None:
    cost = _problem(1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda c: sinkhorn(c, epsilon=0.3, grad=grad, **TIGHT).plan, (cost,)
    )


@pytest.mark.parametrize("output", ["distance", "plan"])
def test_implicit_gradient_passes_gradcheck_when_every_problem_is_its_own_chunk(
    output: str,
) -> None:
    """The backward works through the batch in chunks rebuilt from the potentials."""
    cost = _problem(11, batch=3).requires_grad_()
    weights = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0), dtype=cost.dtype)
    with mock.patch.object(implicit, "CHUNK_ENTRIES", 1):
        assert torch.autograd.gradcheck(
            lambda c: (
                sinkhorn(c, epsilon=0.3, **TIGHT).distance
                if output == "distance"
                else sinkhorn(c, epsilon=0.3, **TIGHT).plan * weights
            ),
            (cost,),
        )


@pytest.mark.parametrize("chunk_entries", [1, 1 << 30])
def test_transport_cost_is_the_sum_of_products_and_passes_gradcheck(chunk_entries: int) -> None:
    generator = torch.Generator().manual_seed(12)
    plan = torch.rand(5, 4, 3, generator=generator, dtype=torch.float64).requires_grad_()
    cost = torch.rand(5, 4, 3, generator=generator, dtype=torch.float64).requires_grad_()
    with mock.patch.object(implicit, "CHUNK_ENTRIES", chunk_entries):
        expected = (plan.detach() * cost.detach()).sum(dim=(1, 2))
        assert torch.allclose(transport_cost(plan, cost), expected, rtol=0, atol=1e-15)
        assert torch.autograd.gradcheck(transport_cost, (plan, cost))


def test_implicit_gradient_passes_gradcheck_with_respect_to_the_marginals() -> None:
    cost = _problem(2)
    a = torch.tensor([[0.1, 0.2, 0.3, 0.15, 0.25]] * 2, dtype=torch.float64)
    b = torch.tensor([[0.4, 0.1, 0.3, 0.2]] * 2, dtype=torch.float64)

    def distance(raw_a: torch.Tensor, raw_b: torch.Tensor) -> torch.Tensor:
        # Normalise inside so that the finite differences stay on the simplex.
        ma, mb = raw_a / raw_a.sum(-1, keepdim=True), raw_b / raw_b.sum(-1, keepdim=True)
        return sinkhorn(cost, ma, mb, epsilon=0.3, **TIGHT).distance

    assert torch.autograd.gradcheck(distance, (a.requires_grad_(), b.requires_grad_()))


def test_envelope_gradient_is_the_gradient_of_the_regularised_value() -> None:
    """With the plan held constant, d/dC of the regularised value is the plan (Danskin)."""
    cost = _problem(3).requires_grad_()
    result = sinkhorn(cost, epsilon=0.3, grad="envelope", **TIGHT)
    (envelope,) = torch.autograd.grad(result.distance.sum(), cost)

    def value(c: torch.Tensor) -> torch.Tensor:
        plan = sinkhorn(c, epsilon=0.3, grad="unrolled", **TIGHT).plan
        return regularised_value(c, plan, 0.3).sum()

    (exact,) = torch.autograd.grad(value(cost), cost)
    assert torch.allclose(envelope, exact, atol=1e-8)


def test_envelope_gradient_differs_from_the_gradient_of_the_distance() -> None:
    cost = _problem(4).requires_grad_()
    (envelope,) = torch.autograd.grad(
        sinkhorn(cost, epsilon=0.3, grad="envelope", **TIGHT).distance.sum(), cost
    )
    (implicit,) = torch.autograd.grad(
        sinkhorn(cost, epsilon=0.3, grad="implicit", **TIGHT).distance.sum(), cost
    )
    relative = (envelope - implicit).norm() / implicit.norm()
    assert relative > 0.05


@given(ot_problems(max_m=6, max_n=5, max_batch=2))
def test_implicit_gradients_equal_unrolled_gradients_at_convergence(problem: dict) -> None:
    cost = problem["cost"]
    weights = torch.randn_like(cost)  # a generic upstream gradient for the plan

    def gradients(grad: str) -> tuple[torch.Tensor, torch.Tensor]:
        c = cost.clone().requires_grad_()
        result = sinkhorn(
            c, problem["a"], problem["b"], epsilon=problem["epsilon"], grad=grad, **TIGHT
        )
        loss = result.distance.sum() + (result.plan * weights).sum()
        return torch.autograd.grad(loss, c)[0], result.distance.detach()

    implicit_grad, implicit_distance = gradients("implicit")
    unrolled_grad, unrolled_distance = gradients("unrolled")
    assert torch.allclose(implicit_distance, unrolled_distance, atol=1e-10)
    assert torch.allclose(implicit_grad, unrolled_grad, atol=1e-7)


def test_masked_entries_receive_no_gradient() -> None:
    cost = _problem(5, batch=1, m=6, n=5).requires_grad_()
    rows = torch.tensor([[True, True, True, True, False, False]])
    cols = torch.tensor([[True, True, True, False, True]])
    result = sinkhorn(cost, epsilon=0.3, mask=(rows, cols), **TIGHT)
    (grad,) = torch.autograd.grad(result.distance.sum(), cost)
    padded = ~(rows[:, :, None] & cols[:, None, :])
    assert (grad[padded] == 0).all()
    small = cost.detach()[:, :4][:, :, [0, 1, 2, 4]].requires_grad_()
    (expected,) = torch.autograd.grad(sinkhorn(small, epsilon=0.3, **TIGHT).distance.sum(), small)
    assert torch.allclose(grad[~padded].reshape(expected.shape), expected, atol=1e-9)


def test_implicit_backward_memory_does_not_depend_on_max_iter() -> None:
    """The implicit mode saves the cost and the potentials, whatever the iteration count."""
    cost = _problem(6).requires_grad_()
    saved_sizes = []
    for max_iter in (5, 500):
        saved: list[int] = []

        def pack(tensor: torch.Tensor, sizes: list[int] = saved) -> torch.Tensor:
            sizes.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            sinkhorn(cost, epsilon=0.3, max_iter=max_iter, tol=None).distance.sum()
        saved_sizes.append(sum(saved))
    assert saved_sizes[0] == saved_sizes[1]


def _pseudo_inverse_gradient(
    plan: torch.Tensor, epsilon: float, upstream: torch.Tensor
) -> torch.Tensor:
    """``d <upstream, T> / d C`` from the full dual system of the plan, by pseudo-inverse.

    An independent float64 reference for :mod:`reidkit.ot.implicit`: ``H [x; y] = [(W T) 1;
    (W T)^T 1]`` with ``H = [[diag(T 1), T], [T^T, diag(T^T 1)]]`` solved by least squares (the
    minimum-norm solution where the plan's support falls apart), then
    ``T * (x_i + y_j - W_ij) / epsilon``.
    """
    gradients = []
    for t, w in zip(plan.double().numpy(), upstream.double().numpy()):
        m = t.shape[0]
        system = np.block([[np.diag(t.sum(1)), t], [t.T, np.diag(t.sum(0))]])
        weighted = w * t
        rhs = np.concatenate([weighted.sum(1), weighted.sum(0)])
        solution = np.linalg.lstsq(system, rhs, rcond=1e-12)[0]
        x, y = solution[:m], solution[m:]
        gradients.append(t * (x[:, None] + y[None, :] - w) / epsilon)
    return torch.from_numpy(np.stack(gradients))


def _cosine_costs(seed: int, batch: int = 6, m: int = 10, n: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(batch, m, 16, generator=generator), dim=-1)
    y = F.normalize(torch.randn(batch, n, 16, generator=generator), dim=-1)
    return 1 - x @ y.transpose(1, 2)


# Far from the fixed point after the default 50 iterations, with plans whose support fell apart
# in float32: the implicit system is singular there.
AWAY_FROM_THE_FIXED_POINT = {
    "cosine costs at epsilon 1e-3": (_cosine_costs(11), 1e-3),
    "cosine costs x100": (100 * _cosine_costs(12), 0.1),
    "raw logits x30": (
        30 * torch.randn(6, 10, 4, generator=torch.Generator().manual_seed(13)),
        0.1,
    ),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", AWAY_FROM_THE_FIXED_POINT)
def test_implicit_gradient_away_from_the_fixed_point_is_that_of_the_returned_plan(
    case: str, dtype: torch.dtype
) -> None:
    cost, epsilon = AWAY_FROM_THE_FIXED_POINT[case]
    leaf = cost.to(dtype, copy=True).requires_grad_()
    result = sinkhorn(leaf, epsilon=epsilon, on_nonconvergence="ignore")
    assert not result.converged.all()
    upstream = torch.randn(cost.shape, generator=torch.Generator().manual_seed(14), dtype=dtype)
    (grad,) = torch.autograd.grad((result.plan * upstream).sum() + result.distance.sum(), leaf)
    assert torch.isfinite(grad).all()
    # The exact gradient for the plan returned (its own marginals), connected or not:
    # d distance / d plan = cost, plus the explicit cost term of the distance.
    plan = result.plan.detach()
    expected = _pseudo_inverse_gradient(plan, epsilon, upstream + leaf.detach())
    expected += plan.double()
    scale = expected.abs().amax(dim=(1, 2), keepdim=True)
    # float32 rounding of the exponents, amplified by 1 / epsilon in the gradient.
    rounding = torch.finfo(dtype).eps * float(cost.abs().max()) / epsilon
    assert torch.allclose(grad.double() / scale, expected / scale, atol=1e-7 + 32 * rounding)


def test_a_plan_whose_support_fell_apart_gets_the_gradient_of_each_part() -> None:
    """Two blocks of rows and columns 50 / epsilon apart: the float32 plan is block diagonal."""
    blocks = _problem(15, batch=2, m=4, n=3).float()
    cost = torch.full((1, 8, 6), 50.0)
    cost[0, :4, :3], cost[0, 4:, 3:] = blocks[0], blocks[1]
    leaf = cost.requires_grad_()
    (grad,) = torch.autograd.grad(sinkhorn(leaf, epsilon=0.1, **TIGHT).distance.sum(), leaf)
    parts = blocks.clone().requires_grad_()
    (expected,) = torch.autograd.grad(sinkhorn(parts, epsilon=0.1, **TIGHT).distance.sum(), parts)
    # Each block carries half of the mass: d distance / d C is half that of the block alone.
    assert torch.allclose(grad[0, :4, :3], expected[0] / 2, atol=1e-6)
    assert torch.allclose(grad[0, 4:, 3:], expected[1] / 2, atol=1e-6)
    assert (grad[0, :4, 3:] == 0).all() and (grad[0, 4:, :3] == 0).all()
