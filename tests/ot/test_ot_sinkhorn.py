"""Properties of :func:`reidkit.sinkhorn` against POT and float64 brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reidkit import SinkhornOT, sinkhorn
from reidkit.ot import solvers
from tests.ot.strategies import TIGHT, full_marginals, ot_problems, pot_plans


@given(ot_problems())
def test_plan_is_nonnegative_and_has_the_requested_marginals(problem: dict) -> None:
    result = sinkhorn(**problem, tol=1e-6, max_iter=5000)
    a, b = full_marginals(problem)
    assert (result.plan >= 0).all()
    assert torch.allclose(result.plan.sum(-1), a, atol=1e-6)
    assert torch.allclose(result.plan.sum(-2), b, atol=1e-9)
    assert (result.marginal_error <= 1e-6 + 1e-9).all()


@given(ot_problems())
def test_plan_and_distance_match_pot(problem: dict) -> None:
    result = sinkhorn(**problem, **TIGHT)
    a, b = full_marginals(problem)
    expected = pot_plans(problem["cost"], a, b, problem["epsilon"])
    np.testing.assert_allclose(result.plan.numpy(), expected, atol=1e-8)
    expected_distance = (expected * problem["cost"].numpy()).sum(axis=(1, 2))
    np.testing.assert_allclose(result.distance.numpy(), expected_distance, atol=1e-8)


@given(ot_problems(), st.integers(0, 2**31 - 1))
def test_plan_is_invariant_to_constant_row_and_column_shifts(problem: dict, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    batch, m, n = problem["cost"].shape
    row = torch.randn(batch, m, 1, generator=generator, dtype=torch.float64)
    col = torch.randn(batch, 1, n, generator=generator, dtype=torch.float64)
    shifted = {**problem, "cost": problem["cost"] + 3.0 + row + col}
    plan = sinkhorn(**problem, **TIGHT).plan
    assert torch.allclose(sinkhorn(**shifted, **TIGHT).plan, plan, atol=1e-9)


@given(ot_problems(), st.integers(0, 2**31 - 1))
def test_permuting_rows_and_columns_permutes_the_plan(problem: dict, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    _, m, n = problem["cost"].shape
    rows, cols = torch.randperm(m, generator=generator), torch.randperm(n, generator=generator)
    a, b = full_marginals(problem)
    permuted = sinkhorn(
        problem["cost"][:, rows][:, :, cols],
        a[:, rows],
        b[:, cols],
        epsilon=problem["epsilon"],
        **TIGHT,
    ).plan
    plan = sinkhorn(**problem, **TIGHT).plan
    assert torch.allclose(permuted, plan[:, rows][:, :, cols], atol=1e-9)


@given(ot_problems())
def test_transposing_the_cost_and_swapping_marginals_transposes_the_plan(problem: dict) -> None:
    a, b = full_marginals(problem)
    swapped = sinkhorn(problem["cost"].transpose(1, 2), b, a, epsilon=problem["epsilon"], **TIGHT)
    plan = sinkhorn(**problem, **TIGHT).plan
    assert torch.allclose(swapped.plan, plan.transpose(1, 2), atol=1e-9)


@given(ot_problems(max_batch=1), st.integers(0, 4), st.integers(0, 3), st.booleans())
def test_masked_padding_equals_the_unpadded_problem(
    problem: dict, extra_rows: int, extra_cols: int, garbage_is_inf: bool
) -> None:
    cost = problem["cost"]
    _, m, n = cost.shape
    a, b = full_marginals(problem)
    padded = torch.full(
        (1, m + extra_rows, n + extra_cols), float("inf") if garbage_is_inf else 7.0
    )
    padded = padded.double()
    padded[:, :m, :n] = cost
    row_mask = torch.arange(m + extra_rows) < m
    col_mask = torch.arange(n + extra_cols) < n
    pad_a = torch.cat([a, a.new_zeros(1, extra_rows)], dim=1)
    pad_b = torch.cat([b, b.new_zeros(1, extra_cols)], dim=1)
    uniform = problem["a"] is None
    result = sinkhorn(
        padded,
        None if uniform else pad_a,
        None if uniform else pad_b,
        epsilon=problem["epsilon"],
        mask=(row_mask, col_mask),
        **TIGHT,
    )
    expected = sinkhorn(**problem, **TIGHT)
    assert torch.allclose(result.plan[:, :m, :n], expected.plan, atol=1e-9)
    assert (result.plan[:, m:] == 0).all() and (result.plan[:, :, n:] == 0).all()
    assert torch.allclose(result.distance, expected.distance, atol=1e-9)
    assert (result.f[:, m:] == 0).all() and (result.g[:, n:] == 0).all()


def test_leading_dimensions_are_batched() -> None:
    cost = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    result = sinkhorn(cost, epsilon=0.1, **TIGHT)
    flat = sinkhorn(cost.reshape(6, 5, 4), epsilon=0.1, **TIGHT)
    assert result.plan.shape == (2, 3, 5, 4)
    assert result.distance.shape == result.n_iter.shape == (2, 3)
    assert result.f.shape == (2, 3, 5) and result.g.shape == (2, 3, 4)
    assert torch.allclose(result.plan.reshape(6, 5, 4), flat.plan)
    single = sinkhorn(cost[0, 0], epsilon=0.1, **TIGHT)
    assert single.plan.shape == (5, 4) and single.distance.shape == ()


def test_potentials_reconstruct_the_plan() -> None:
    cost = torch.rand(4, 6, 3, dtype=torch.float64)
    result = sinkhorn(cost, epsilon=0.2, **TIGHT)
    rebuilt = torch.exp((result.f[..., :, None] + result.g[..., None, :] - cost) / 0.2)
    assert torch.allclose(rebuilt, result.plan, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("epsilon", [1e-3, 1e-2])
def test_small_epsilon_stays_finite_and_reports_its_error(
    epsilon: float, dtype: torch.dtype
) -> None:
    cost = 2 * torch.rand(8, 12, 5, generator=torch.Generator().manual_seed(0), dtype=dtype)
    result = sinkhorn(cost, epsilon=epsilon, max_iter=2000, tol=1e-3)
    assert torch.isfinite(result.plan).all() and torch.isfinite(result.distance).all()
    converged = result.n_iter < 2000
    assert converged.any()
    # float32 potentials of size ~1 carry rounding errors ~1e-7, amplified by 1 / epsilon in
    # the plan: the reported error (recomputed from the plan) may exceed tol by that much.
    slack = 0.0 if dtype == torch.float64 else 1e-7 / epsilon * 500
    assert (result.marginal_error[converged] <= 1e-3 + slack).all()
    plan = result.plan.double()
    error = (plan.sum(-1) - 1 / 12).abs().sum(-1) + (plan.sum(-2) - 1 / 5).abs().sum(-1)
    assert torch.allclose(result.marginal_error.double(), error, atol=1e-6)


def test_unnormalised_logits_use_the_log_domain_and_stay_finite() -> None:
    logits = 40 * torch.randn(4, 16, 6, generator=torch.Generator().manual_seed(1))
    assert solvers.choose_domain(-logits, 0.5) == "log"
    result = sinkhorn(-logits, epsilon=0.5, max_iter=2000)
    assert torch.isfinite(result.plan).all() and torch.isfinite(result.f).all()
    assert (result.n_iter < 2000).all()
    assert (result.marginal_error <= 1e-3 * (1 + 1e-3)).all()
    exact = sinkhorn(-logits.double(), epsilon=0.5, **TIGHT)
    assert torch.allclose(result.plan.double(), exact.plan, atol=2e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_solved_in_float32(dtype: torch.dtype) -> None:
    cost = 2 * torch.rand(4, 10, 5, generator=torch.Generator().manual_seed(2))
    low = sinkhorn(cost.to(dtype), epsilon=0.1, tol=1e-5, max_iter=500)
    full = sinkhorn(cost.to(dtype).float(), epsilon=0.1, tol=1e-5, max_iter=500)
    assert low.plan.dtype == dtype and low.f.dtype == torch.float32
    assert torch.equal(low.f, full.f)
    assert torch.allclose(low.distance.float(), full.distance, rtol=1e-2)


def test_each_problem_stops_on_its_own_and_check_every_does_not_change_results() -> None:
    generator = torch.Generator().manual_seed(3)
    cost = torch.cat(
        [torch.rand(1, 6, 4, generator=generator), 30 * torch.rand(1, 6, 4, generator=generator)]
    )
    every = sinkhorn(cost, epsilon=0.5, max_iter=2000, tol=1e-4, check_every=1)
    rarely = sinkhorn(cost, epsilon=0.5, max_iter=2000, tol=1e-4, check_every=64)
    assert every.n_iter[0] < every.n_iter[1]
    assert torch.equal(every.n_iter, rarely.n_iter) and torch.equal(every.plan, rarely.plan)


@pytest.mark.parametrize("scale", [1.0, 30.0])  # scaling domain, log domain
def test_slow_problems_finish_alone_with_the_results_they_get_alone(scale: float) -> None:
    """Once most problems converge the loop continues on the rest: results must not change."""
    generator = torch.Generator().manual_seed(4)
    fast = torch.rand(7, 6, 4, generator=generator, dtype=torch.float64)
    slow = 8 * torch.rand(2, 6, 4, generator=generator, dtype=torch.float64)
    cost = scale * torch.cat([fast[:3], slow[:1], fast[3:], slow[1:]])
    batch = sinkhorn(cost, epsilon=0.5 * scale, max_iter=3000, tol=1e-9, check_every=2)
    assert batch.n_iter[3] > 2 * batch.n_iter.median()
    for index in range(cost.shape[0]):
        alone = sinkhorn(cost[index], epsilon=0.5 * scale, max_iter=3000, tol=1e-9)
        assert batch.n_iter[index] == alone.n_iter
        assert torch.allclose(batch.plan[index], alone.plan, rtol=0, atol=1e-15)


def test_fixed_iterations_when_tol_is_none() -> None:
    result = sinkhorn(torch.rand(3, 5, 4), epsilon=0.05, max_iter=3, tol=None)
    assert (result.n_iter == 3).all()


def test_update_rule_is_looser_than_the_marginal_rule() -> None:
    cost = 2 * torch.rand(64, 40, 6, generator=torch.Generator().manual_seed(4))
    loose = sinkhorn(cost, epsilon=0.1, max_iter=50, tol=0.05, stop_rule="update")
    strict = sinkhorn(cost, epsilon=0.1, max_iter=50, tol=1e-3)
    assert loose.n_iter.float().mean() < strict.n_iter.float().mean()
    assert loose.marginal_error.mean() > strict.marginal_error.mean()


def test_update_rule_measures_the_change_of_the_row_scaling() -> None:
    cost = torch.rand(1, 5, 3, dtype=torch.float64)
    result = sinkhorn(cost, epsilon=0.5, max_iter=200, tol=1e-3, stop_rule="update")
    kernel = torch.exp(-cost[0] / 0.5)
    a, b = torch.full((5,), 0.2).double(), torch.full((3,), 1 / 3).double()
    u, v = torch.ones(5).double(), torch.ones(3).double()
    for iteration in range(200):  # MMPL / PLOT: stop when mean |u_t - u_{t-1}| < tol
        new_u = a / (kernel @ v)
        if iteration > 0 and (new_u - u).abs().mean() <= 1e-3:
            break
        u, v = new_u, b / (kernel.T @ new_u)
    assert int(result.n_iter) == iteration
    assert torch.allclose(result.plan[0], u[:, None] * kernel * v[None, :], atol=1e-12)


def test_module_matches_function() -> None:
    cost = torch.rand(3, 7, 4)
    module = SinkhornOT(epsilon=0.1, max_iter=80, tol=1e-4)
    assert torch.equal(module(cost).plan, sinkhorn(cost, epsilon=0.1, max_iter=80, tol=1e-4).plan)
    assert "epsilon=0.1" in repr(module)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cost": torch.tensor([[1.0, float("nan")]])}, "cost must be finite"),
        ({"cost": torch.tensor([[1.0, float("inf")]])}, "cost must be finite"),
        ({"cost": torch.ones(3)}, r"cost must have shape \(\.\.\., M, N\)"),
        ({"cost": torch.ones(2, 2, dtype=torch.int64)}, "floating-point"),
        ({"cost": torch.ones(0, 2)}, "M >= 1"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"epsilon": float("nan")}, "epsilon"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1.0}, "tol"),
        ({"grad": "magic"}, "grad"),
        ({"backend": "cuda"}, "backend"),
        ({"stop_rule": "never"}, "stop_rule"),
        ({"a": torch.tensor([0.5, 0.6])}, "a must sum to 1"),
        ({"a": torch.tensor([1.5, -0.5])}, "a must be non-negative"),
        ({"b": torch.tensor([1.0, 0.0, 0.0])}, "b must broadcast"),
        ({"a": torch.ones(3) / 3}, "a must broadcast"),
        ({"mask": (torch.tensor([True, True, True]), None)}, "row mask"),
        ({"mask": (None, torch.tensor([False, False]))}, "at least one real entry"),
        ({"mask": torch.ones(2, 2, dtype=torch.bool)}, "mask must be a pair"),
        ({"check_every": 0}, "check_every"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_argument(kwargs: dict, message: str) -> None:
    arguments = {"cost": torch.rand(2, 2), "epsilon": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        sinkhorn(**arguments)


def test_module_validates_its_options() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        SinkhornOT(epsilon=0)


def test_explicit_triton_backend_with_unrolled_gradients_is_rejected() -> None:
    with pytest.raises(ValueError, match="backend='triton'"):
        sinkhorn(torch.rand(2, 3, 3), epsilon=0.1, backend="triton", grad="unrolled")
