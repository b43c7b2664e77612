"""The safety net of the implicit gradient: the envelope gradient for a problem whose implicit
gradient is not finite, flagged, counted and reported once, on both backends.

No finite input reaches an ill-posed implicit solve (the system is regularised), so the
condition is forced: the dual solve returns NaN for one problem.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from reidkit import pairwise_ot_distance, sinkhorn
from reidkit.kernels import pairwise_backward
from reidkit.ot import SinkhornOptions, grad_fallback_count, implicit
from tests.kernels.helpers import DEVICE, KERNEL_MARKS, unit_features

FALLBACK_MESSAGE = (
    "{caller}: the implicit gradient of some problems was not finite, so their envelope gradient "
    "(the plan held constant) was used instead; reidkit.ot.grad_fallback_count() counts them"
)


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch):
    """``poison(k)``: from now on the dual solve returns NaN for flat problem ``k``."""

    def set_problem(problem: int) -> None:
        solve = implicit.solve_dual_system

        def poisoned(plan: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
            x, y = solve(plan, rows, cols)
            x = x.clone()
            x[problem] = float("nan")
            return x, y

        monkeypatch.setattr(implicit, "solve_dual_system", poisoned)

    return set_problem


def _on_the_kernels(test):
    """The skip and warning filters of the kernel tests (Triton's interpreter on CPUs)."""
    for mark in KERNEL_MARKS:
        test = mark(test)
    return test


def _runtime_warnings(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, RuntimeWarning)]


def _dense_gradients(grad: str, backend: str = "torch", upstream_nan: bool = False):
    """Gradients of a loss of the distance and the plan with respect to cost, a and b."""
    generator = torch.Generator().manual_seed(0)
    dtype = torch.float64 if backend == "torch" else torch.float32
    cost = torch.rand(4, 5, 3, generator=generator, dtype=dtype).to(DEVICE).requires_grad_()
    a = torch.full((4, 5), 0.2, dtype=dtype, device=DEVICE, requires_grad=True)
    b = torch.full((4, 3), 1 / 3, dtype=dtype, device=DEVICE, requires_grad=True)
    weights = torch.randn(4, generator=generator, dtype=dtype).to(DEVICE)
    plan_weights = torch.randn(4, 5, 3, generator=generator, dtype=dtype).to(DEVICE)
    if upstream_nan:
        weights[2] = float("nan")
    options = SinkhornOptions(epsilon=0.5, max_iter=1000, tol=1e-6, grad=grad, backend=backend)
    result = sinkhorn(cost, a, b, options=options)
    loss = (result.distance * weights).sum() + (result.plan * plan_weights).sum()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grads = torch.autograd.grad(loss, (cost, a, b), allow_unused=True)
    return result, grads, _runtime_warnings(caught), weights


def test_the_implicit_gradient_falls_back_per_problem_and_says_so(poison) -> None:
    _, implicit_grads, none, _ = _dense_gradients("implicit")
    envelope_result, envelope_grads, _, weights = _dense_gradients("envelope")
    assert not none
    before = grad_fallback_count()
    poison(2)
    result, grads, caught, _ = _dense_gradients("implicit")
    assert result.grad_fallback.tolist() == [False, False, True, False]
    assert grad_fallback_count() == before + 1
    assert [str(w.message) for w in caught] == [FALLBACK_MESSAGE.format(caller="sinkhorn")]
    assert caught[0].filename == __file__  # the line that asked for the gradient
    grad_cost, grad_a, grad_b = grads
    others = [0, 1, 3]
    for got, want in zip(grads, implicit_grads):
        assert torch.equal(got[others], want[others])  # untouched
    # The envelope gradient: d distance / d cost = plan, nothing through the plan or marginals.
    assert torch.allclose(grad_cost[2], weights[2] * envelope_result.plan[2], atol=1e-15)
    assert torch.allclose(grad_cost[2], envelope_grads[0][2], atol=1e-15)
    assert not grad_a[2].any() and not grad_b[2].any()


def test_a_non_finite_upstream_gradient_is_passed_on_never_replaced(poison) -> None:
    before = grad_fallback_count()
    poison(2)
    result, (grad_cost, _, _), caught, _ = _dense_gradients("implicit", upstream_nan=True)
    assert not result.grad_fallback.any() and grad_fallback_count() == before and not caught
    assert torch.isnan(grad_cost[2]).all() and torch.isfinite(grad_cost[[0, 1, 3]]).all()


def test_the_fallback_warns_once_per_call_site(poison) -> None:
    poison(0)
    cost = torch.rand(2, 4, 3, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own: once per call site
        for _ in range(3):
            sinkhorn(cost, epsilon=0.5).distance.sum().backward()
    assert len(_runtime_warnings(caught)) == 1


def _pairwise_gradients(upstream: torch.Tensor, backend: str = "torch", **options):
    dtype = torch.float64 if backend == "torch" else torch.float32
    x = (2 * unit_features(1, 2, 4, 6)).to(dtype).requires_grad_()  # any norm: cosine cost
    y = unit_features(2, 3, 2, 6).to(dtype).requires_grad_()
    settings = SinkhornOptions(epsilon=0.2, max_iter=500, tol=1e-7, backend=backend, **options)
    distances = pairwise_ot_distance(x, y, options=settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grads = torch.autograd.grad((distances * upstream.to(dtype)).sum(), (x, y))
    return grads, _runtime_warnings(caught)


def test_pairwise_problems_fall_back_one_by_one(poison) -> None:
    upstream = torch.randn(2, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    upstream = upstream.to(DEVICE)
    alone = torch.zeros_like(upstream)
    alone[1, 1] = upstream[1, 1]
    # The gradient is linear in the upstream one: the implicit gradient of every other problem
    # plus the envelope gradient of problem (1, 1), flat index 1 * 3 + 1 in the one chunk.
    others, _ = _pairwise_gradients(upstream - alone)
    envelope, _ = _pairwise_gradients(alone, grad="envelope")
    before = grad_fallback_count()
    poison(4)
    grads, caught = _pairwise_gradients(upstream)
    assert grad_fallback_count() == before + 1
    assert [str(w.message) for w in caught] == [
        FALLBACK_MESSAGE.format(caller="pairwise_ot_distance")
    ]
    for got, first, second in zip(grads, others, envelope):
        assert torch.allclose(got, first + second, atol=1e-12)


@_on_the_kernels
@pytest.mark.parametrize("poisoned", [False, True])
def test_a_non_finite_fused_backward_is_recomputed_on_the_torch_path(
    monkeypatch: pytest.MonkeyPatch, poison, poisoned: bool
) -> None:
    upstream = torch.randn(2, 3, generator=torch.Generator().manual_seed(6)).to(DEVICE)
    if poisoned:
        poison(4)
    # the torch path in float64; the fused one in float32
    reference, reference_warnings = _pairwise_gradients(upstream, backend="torch")
    fused_grads = pairwise_backward.pairwise_feature_grads

    def fused_nan(*args: object) -> tuple[torch.Tensor, torch.Tensor]:
        grad_x, grad_y = fused_grads(*args)
        return grad_x.fill_(float("nan")), grad_y

    monkeypatch.setattr(pairwise_backward, "pairwise_feature_grads", fused_nan)
    before = grad_fallback_count()
    grads, caught = _pairwise_gradients(upstream, backend="triton")
    caught = [w for w in caught if "implicit gradient" in str(w.message)]
    assert grad_fallback_count() == before + (1 if poisoned else 0)
    assert len(caught) == len(reference_warnings) == (1 if poisoned else 0)
    for got, want in zip(grads, reference):
        assert torch.isfinite(got).all()
        assert torch.allclose(got.double(), want, atol=1e-4)


@_on_the_kernels
def test_the_kernel_forward_of_sinkhorn_shares_the_torch_backward_and_its_fallback(
    poison,
) -> None:
    poison(2)
    result, (grad_cost, _, _), caught, weights = _dense_gradients("implicit", "triton")
    assert result.grad_fallback.tolist() == [False, False, True, False]
    caught = [w for w in caught if "implicit gradient" in str(w.message)]
    assert len(caught) == 1
    assert torch.allclose(grad_cost[2], weights[2] * result.plan[2], atol=1e-7)
