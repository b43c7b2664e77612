"""The fused cost-tile Sinkhorn kernel against the plain-torch solvers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reidkit import sinkhorn
from reidkit.kernels.sinkhorn_kernels import sinkhorn_potentials
from reidkit.ot.implicit import plan_from_potentials
from reidkit.ot.solvers import log_domain_potentials
from tests.kernels.helpers import DEVICE, DTYPES, KERNEL_MARKS, examples

pytestmark = KERNEL_MARKS

# Awkward (M, N): sizes 1, non-powers of two, the MMPL and AAformer tiles, the largest tile.
SHAPES = [(1, 1), (1, 7), (5, 1), (3, 2), (10, 4), (37, 17), (80, 8), (5, 128), (128, 32)]
STOPS = [("marginal", 1e-3), ("marginal", 1e-5), ("update", 0.05), ("marginal", None)]


def _marginal(generator: torch.Generator, batch: int, size: int, sparse: bool) -> torch.Tensor:
    weights = torch.rand(batch, size, generator=generator) + 0.1
    if sparse:  # zero mass marks padded entries; keep the first entry real
        weights[:, 1:] *= torch.rand(batch, size - 1, generator=generator) > 0.4
    return weights / weights.sum(dim=1, keepdim=True)


@st.composite
def cost_problems(draw: st.DrawFn) -> dict:
    m, n = draw(st.sampled_from(SHAPES))
    # Batches cross the boundaries between programs, which pack several small problems.
    batch = draw(st.integers(1, 21 if m * n <= 64 else 3))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([1.0, 2.0, 30.0]))  # cosine costs, and raw logits
    sparse = draw(st.booleans())
    return {
        "cost": scale * torch.rand(batch, m, n, generator=generator),
        "a": _marginal(generator, batch, m, sparse),
        "b": _marginal(generator, batch, n, sparse),
        "epsilon": draw(st.sampled_from([0.01, 0.05, 0.1, 0.5])),
        "stop": draw(st.sampled_from(STOPS)),
    }


@settings(max_examples=examples(0.5))
@given(cost_problems(), st.sampled_from(DTYPES))
def test_potentials_and_iteration_counts_equal_the_torch_solver(
    problem: dict, dtype: torch.dtype
) -> None:
    cost = problem["cost"].to(DEVICE, dtype)
    a, b = problem["a"].to(DEVICE), problem["b"].to(DEVICE)
    stop_rule, tol = problem["stop"]
    options = (problem["epsilon"], 30, tol, stop_rule)
    f, g, n_iter = sinkhorn_potentials(cost, a, b, *options)
    # The torch log-domain solver runs the same iteration on the rounded cost, in fp32.
    f_ref, g_ref, n_iter_ref = log_domain_potentials(cost.float(), a, b, *options)
    assert torch.equal(n_iter, n_iter_ref)
    assert torch.equal(torch.isinf(f), a == 0) and torch.equal(torch.isinf(g), b == 0)
    # fp32 rounding of the exponents (f_i + g_j - C_ij) / epsilon: 64 ulps of the largest.
    exponent_tol = 64 * 2**-24 * float(cost.abs().max()) / problem["epsilon"] + 1e-6
    potential_tol = exponent_tol * problem["epsilon"]
    assert torch.allclose(f[a > 0], f_ref[a > 0], atol=potential_tol, rtol=0)
    assert torch.allclose(g[b > 0], g_ref[b > 0], atol=potential_tol, rtol=0)
    plan = plan_from_potentials(cost.float(), f, g, problem["epsilon"])
    plan_ref = plan_from_potentials(cost.float(), f_ref, g_ref, problem["epsilon"])
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
    cost[~rows] = float("nan")  # masked entries are never read
    stop_rule, tol = stop
    kwargs = {"epsilon": 0.1, "mask": (rows.to(DEVICE), cols.to(DEVICE))}
    kwargs.update(tol=tol, stop_rule=stop_rule)
    fused = sinkhorn(cost, backend="triton", **kwargs)
    reference = sinkhorn(cost, backend="torch", **kwargs)  # scaling domain for these costs
    assert torch.equal(fused.n_iter, reference.n_iter)
    assert torch.allclose(fused.plan, reference.plan, atol=1e-6, rtol=1e-4)
    assert torch.allclose(fused.distance, reference.distance, atol=1e-5)
    assert torch.allclose(fused.f, reference.f, atol=1e-5) and torch.equal(
        fused.f == 0, reference.f == 0
    )


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
