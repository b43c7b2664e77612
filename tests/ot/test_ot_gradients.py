"""Gradients of :func:`reidkit.sinkhorn`: gradcheck for every mode and cross-mode agreement."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from reidkit import sinkhorn
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
