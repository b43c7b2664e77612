"""The fused cost-tile Sinkhorn kernel against the plain-torch solvers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reidkit import sinkhorn
from reidkit.kernels.cost_tile import sinkhorn_potentials
from reidkit.ot.implicit import plan_from_potentials
from reidkit.ot.solvers import log_domain_potentials
from tests.kernels.helpers import DEVICE, DTYPES, KERNEL_MARKS, examples
from tests.ot.strategies import allowed_outcomes

pytestmark = KERNEL_MARKS

# Awkward (M, N): sizes 1, non-powers of two, the MMPL and AAformer tiles, the largest tile.
SHAPES = [(1, 1), (1, 7), (5, 1), (3, 2), (10, 4), (37, 17), (80, 8), (5, 128), (128, 32)]
STOPS = [("marginal", 1e-3), ("marginal", 1e-5), ("update", 0.05), ("marginal", None)]
MAX_ITER = 30


def _marginal(generator: torch.Generator, batch: int, size: int, sparse: bool) -> torch.Tensor:
    weights = torch.rand(batch, size, generator=generator) + 0.1
    if sparse:  # zero mass marks padded entries; keep the first entry real
        weights[:, 1:] *= torch.rand(batch, size - 1, generator=generator) > 0.4
    return weights / weights.sum(dim=1, keepdim=True)


@st.composite
def cost_problems(draw: st.DrawFn) -> dict:
    m, n = draw(st.sampled_from(SHAPES))
    return {
        "shape": (m, n),
        # Batches cross the boundaries between programs, which pack several small problems.
        "batch": draw(st.integers(1, 21 if m * n <= 64 else 3)),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "scale": draw(st.sampled_from([1.0, 2.0, 30.0])),  # cosine costs, and raw logits
        "sparse": draw(st.booleans()),
        "epsilon": draw(st.sampled_from([0.01, 0.05, 0.1, 0.5])),
        "stop": draw(st.sampled_from(STOPS)),
    }


def _tensors(problem: dict, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The cost (rounded to ``dtype``) and marginals of a drawn problem."""
    (m, n), batch = problem["shape"], problem["batch"]
    generator = torch.Generator().manual_seed(problem["seed"])
    cost = problem["scale"] * torch.rand(batch, m, n, generator=generator)
    a = _marginal(generator, batch, m, problem["sparse"])
    b = _marginal(generator, batch, n, problem["sparse"])
    return cost.to(DEVICE, dtype), a.to(DEVICE), b.to(DEVICE)


# Stop decisions taken at float32 round-off, where kernel and torch rightly differ: a 1 x 7
# problem is solved by its first iteration, after which the update rule measures rounding
# noise (kernel 3 iterations, torch 2); the marginal rule at tol 1e-5 (29 or 30 iterations).
@example(
    {"shape": (1, 7), "batch": 1, "seed": 0, "scale": 1.0, "sparse": True, "epsilon": 0.01,
     "stop": ("update", 0.05)},
    torch.float32,
)  # fmt: skip
@example(
    {"shape": (3, 2), "batch": 3, "seed": 0, "scale": 1.0, "sparse": False, "epsilon": 0.01,
     "stop": ("marginal", 1e-5)},
    torch.float32,
)  # fmt: skip
@settings(max_examples=examples(0.5))
@given(cost_problems(), st.sampled_from(DTYPES))
def test_potentials_and_stop_decisions_agree_with_the_torch_solver(
    problem: dict, dtype: torch.dtype
) -> None:
    cost, a, b = _tensors(problem, dtype)
    epsilon, (stop_rule, tol) = problem["epsilon"], problem["stop"]
    fused = sinkhorn_potentials(cost, a, b, epsilon, MAX_ITER, tol, stop_rule)
    # The torch log-domain solver runs the same iteration on the rounded cost, in fp32.
    torch_run = log_domain_potentials(cost.float(), a, b, epsilon, MAX_ITER, tol, stop_rule)
    allowed = allowed_outcomes(cost.float(), a, b, epsilon, MAX_ITER, stop_rule, tol)
    for index, outcomes in enumerate(allowed):
        # Both meet the rule, within float32 slack, where they stop (exactly one outcome
        # wherever the residual is not at round-off level).
        assert (int(fused.n_iter[index]), bool(fused.converged[index])) in outcomes
        assert (int(torch_run.n_iter[index]), bool(torch_run.converged[index])) in outcomes
    assert torch.equal(torch.isinf(fused.f), a == 0) and torch.equal(torch.isinf(fused.g), b == 0)
    # The kernel's iterate equals the torch solver's after as many iterations.
    f_ref, g_ref = torch.empty_like(fused.f), torch.empty_like(fused.g)
    for count in fused.n_iter.unique().tolist():
        rows = fused.n_iter == count
        same = log_domain_potentials(cost[rows].float(), a[rows], b[rows], epsilon, count, None)
        f_ref[rows], g_ref[rows] = same.f, same.g
    # fp32 rounding of the exponents (f_i + g_j - C_ij) / epsilon: 64 ulps of the largest.
    exponent_tol = 64 * 2**-24 * (float(cost.abs().max()) / epsilon + 1)
    potential_tol = exponent_tol * epsilon
    assert torch.allclose(fused.f[a > 0], f_ref[a > 0], atol=potential_tol, rtol=0)
    assert torch.allclose(fused.g[b > 0], g_ref[b > 0], atol=potential_tol, rtol=0)
    plan = plan_from_potentials(cost.float(), fused.f, fused.g, epsilon)
    plan_ref = plan_from_potentials(cost.float(), f_ref, g_ref, epsilon)
    assert torch.allclose(plan, plan_ref, atol=1e-7, rtol=2 * exponent_tol)


@settings(max_examples=examples(0.2))
@given(
    st.sampled_from([(2, 9, 6), (3, 1, 5), (1, 17, 3)]),
    st.integers(0, 2**31 - 1),
    st.sampled_from(STOPS),
)
def test_masked_sinkhorn_equals_the_torch_backend(
    shape: tuple[int, int, int], seed: int, stop: tuple
) -> None:
    generator = torch.Generator().manual_seed(seed)
    cost = torch.rand(shape, generator=generator).to(DEVICE)
    rows = torch.rand(shape[:2], generator=generator) > 0.3
    cols = torch.rand(shape[0], shape[2], generator=generator) > 0.3
    rows[:, 0] = cols[:, 0] = True
    rows, cols = rows.to(DEVICE), cols.to(DEVICE)
    garbage = cost.clone()
    garbage[~rows] = float("nan")  # masked entries are never read
    stop_rule, tol = stop
    kwargs = {"epsilon": 0.1, "mask": (rows, cols), "max_iter": MAX_ITER}
    kwargs["on_nonconvergence"] = "ignore"
    fused = sinkhorn(garbage, backend="triton", tol=tol, stop_rule=stop_rule, **kwargs)
    reference = sinkhorn(garbage, backend="torch", tol=tol, stop_rule=stop_rule, **kwargs)
    a, b = rows / rows.sum(1, keepdim=True), cols / cols.sum(1, keepdim=True)
    allowed = allowed_outcomes(cost, a, b, 0.1, MAX_ITER, stop_rule, tol)
    for index, outcomes in enumerate(allowed):
        assert (int(fused.n_iter[index]), bool(fused.converged[index])) in outcomes
        assert (int(reference.n_iter[index]), bool(reference.converged[index])) in outcomes
        # The torch backend (scaling domain for these costs) after as many iterations.
        problem = slice(index, index + 1)
        alike = sinkhorn(
            garbage[problem],
            backend="torch",
            tol=None,
            epsilon=0.1,
            mask=(rows[problem], cols[problem]),
            max_iter=int(fused.n_iter[index]),
        )
        assert torch.allclose(fused.plan[problem], alike.plan, atol=1e-6, rtol=1e-4)
        assert torch.allclose(fused.distance[problem], alike.distance, atol=1e-5)
        assert torch.allclose(fused.f[problem], alike.f, atol=1e-5)
        assert torch.equal(fused.f[problem] == 0, alike.f == 0)


@pytest.mark.parametrize("grad", ["implicit", "envelope"])
def test_gradients_through_the_kernel_equal_the_torch_backend(grad: str) -> None:
    generator = torch.Generator().manual_seed(1)
    cost = (2 * torch.rand(3, 12, 5, generator=generator)).to(DEVICE)
    upstream = torch.randn(3, 12, 5, generator=generator).to(DEVICE)
    grads = []
    for backend in ("triton", "torch"):
        leaf = cost.clone().requires_grad_()
        result = sinkhorn(leaf, epsilon=0.1, grad=grad, backend=backend, tol=1e-6, max_iter=300)
        (result.distance.sum() + (result.plan * upstream).sum()).backward()
        grads.append(leaf.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize("stop", [("marginal", 1e-3), ("update", 0.05)])
def test_a_nan_residual_never_counts_as_converged(stop: tuple) -> None:
    cost = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(6)).to(DEVICE)
    cost[1, 2, 1] = float("nan")  # sinkhorn() refuses it; the launcher is reached directly
    a = torch.full((2, 5), 0.2, device=DEVICE)
    b = torch.full((2, 3), 1 / 3, device=DEVICE)
    result = sinkhorn_potentials(cost, a, b, 0.5, 40, stop[1], stop[0])
    assert result.converged.tolist() == [True, False]
    assert result.n_iter[0] < 40 and result.n_iter[1] == 40
