"""Properties of :func:`reidkit.sinkhorn` against POT and float64 brute force."""

from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from reidkit import SinkhornOT, sinkhorn
from reidkit.ot import solvers
from tests.ot.strategies import TIGHT, full_marginals, ot_problems, paper_update_rule, pot_plans


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


@given(ot_problems(max_batch=5))
def test_plan_and_distance_match_pot_when_every_problem_is_its_own_chunk(problem: dict) -> None:
    """The scaling-domain solver works through the batch in chunks: here, of one problem."""
    assert solvers.choose_domain(problem["cost"], problem["epsilon"]) == "scaling"
    with mock.patch.object(solvers, "CHUNK_ENTRIES", 1):
        result = sinkhorn(**problem, **TIGHT)
    a, b = full_marginals(problem)
    expected = pot_plans(problem["cost"], a, b, problem["epsilon"])
    np.testing.assert_allclose(result.plan.numpy(), expected, atol=1e-8)


@given(
    ot_problems(max_batch=7),
    st.integers(1, 30),
    st.integers(1, 4),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_chunks_of_the_scaling_domain_solver_give_the_results_of_one_chunk(
    problem: dict, iterations: int, chunk_problems: int, dtype: torch.dtype
) -> None:
    _, m, n = problem["cost"].shape
    a, b = full_marginals(problem)
    arguments = (problem["cost"].to(dtype), a.to(dtype), b.to(dtype), problem["epsilon"])
    whole = solvers.scaling_domain_potentials(*arguments, iterations, None)
    with mock.patch.object(solvers, "CHUNK_ENTRIES", chunk_problems * m * n):
        chunked = solvers.scaling_domain_potentials(*arguments, iterations, None)
    tolerance = 64 * torch.finfo(dtype).eps  # potentials of size ~1: a few units of round-off
    assert torch.allclose(chunked.f, whole.f, rtol=0, atol=tolerance)
    assert torch.allclose(chunked.g, whole.g, rtol=0, atol=tolerance)
    assert (chunked.n_iter == iterations).all() and chunked.converged.all()


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
    result = sinkhorn(cost, epsilon=epsilon, max_iter=2000, tol=1e-3, on_nonconvergence="ignore")
    assert torch.isfinite(result.plan).all() and torch.isfinite(result.distance).all()
    converged = result.converged
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


@pytest.mark.parametrize("feature_size", [16, 512])
@pytest.mark.parametrize(("m", "n"), [(10, 4), (40, 6), (80, 8)])  # MMPL's three granularities
def test_update_rule_is_mmpls_rule_on_cosine_costs(m: int, n: int, feature_size: int) -> None:
    generator = torch.Generator().manual_seed(m + feature_size)
    x = F.normalize(torch.randn(32, m, feature_size, generator=generator).double(), dim=-1)
    y = F.normalize(torch.randn(32, n, feature_size, generator=generator).double(), dim=-1)
    cost = 1 - x @ y.transpose(1, 2)
    result = sinkhorn(cost, epsilon=0.1, tol=0.05, max_iter=50, stop_rule="update")
    assert result.converged.all()
    # Exactly the paper's rule (PLOT's loop, the update that meets it applied) on the cost
    # shifted to mean 1 ...
    centred = cost - cost.mean(dim=(1, 2), keepdim=True) + 1
    plan, n_iter, margin = paper_update_rule(centred, 0.1, 0.05, 50)
    decided = margin > 1e-6  # every decision of these problems is far from round-off
    assert decided.all() and torch.equal(result.n_iter, n_iter)
    assert torch.allclose(result.plan, plan, rtol=0, atol=1e-8)
    # ... and on the cosine cost itself (mean near 1), the same plans within a tenth of tol.
    plan, _, _ = paper_update_rule(cost, 0.1, 0.05, 50)
    assert ((result.plan - plan).abs().sum(dim=(1, 2)) <= 0.005).all()


@given(
    ot_problems(max_batch=2),
    st.sampled_from([1e-3, 1e-2, 0.1]),
    st.sampled_from([-3.0, 1.0, 40.0]),
    st.sampled_from([("marginal", 1e-3), ("update", 0.05)]),
)
def test_plan_is_unchanged_by_a_constant_added_to_the_cost(
    problem: dict, epsilon: float, shift: float, stop: tuple
) -> None:
    options = {"epsilon": epsilon, "tol": stop[1], "stop_rule": stop[0], "max_iter": 200}
    options["on_nonconvergence"] = "ignore"
    arguments = {"a": problem["a"], "b": problem["b"], **options}
    plan = sinkhorn(problem["cost"], **arguments).plan
    shifted = sinkhorn(problem["cost"] + shift, **arguments).plan
    assert ((shifted - plan).abs().sum(dim=(1, 2)) <= stop[1]).all()


def test_update_rule_does_not_overflow() -> None:
    """exp(f / epsilon) overflows float32 on this cost: the rule must still measure the update."""
    generator = torch.Generator().manual_seed(5)
    x = F.normalize(torch.randn(6, 10, 16, generator=generator), dim=-1)
    y = F.normalize(torch.randn(6, 4, 16, generator=generator), dim=-1)
    cost = 1 - x @ y.transpose(1, 2)
    options = {"epsilon": 0.1, "tol": 0.05, "stop_rule": "update", "max_iter": 50}
    result = sinkhorn(cost + 10, **options)
    exact = sinkhorn(cost.double(), **options)
    assert result.converged.all() and torch.equal(result.n_iter, exact.n_iter)
    assert torch.allclose(result.plan.double(), exact.plan, atol=1e-5)


@pytest.mark.parametrize("stop", [("marginal", 1e-3), ("update", 0.05)])
@pytest.mark.parametrize(
    "solve", [solvers.log_domain_potentials, solvers.scaling_domain_potentials]
)
def test_a_nan_residual_never_counts_as_converged(solve: object, stop: tuple) -> None:
    cost = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(6))
    cost[1, 2, 1] = float("nan")  # sinkhorn() refuses it; the solvers are reached directly
    a, b = torch.full((2, 5), 0.2), torch.full((2, 3), 1 / 3)
    result = solve(cost, a, b, 0.5, 40, stop[1], stop[0])
    assert result.converged.tolist() == [True, False]
    assert result.n_iter[0] < 40 and result.n_iter[1] == 40


def test_converged_flags_the_problems_that_met_the_rule() -> None:
    generator = torch.Generator().manual_seed(7)
    cost = torch.cat([torch.rand(1, 8, 5, generator=generator), 40 * torch.rand(1, 8, 5)])
    options = {"epsilon": 0.5, "tol": 1e-4, "on_nonconvergence": "ignore"}
    result = sinkhorn(cost.double(), max_iter=30, **options)
    assert result.converged.tolist() == [True, False]
    assert result.marginal_error[0] <= 1e-4 < result.marginal_error[1]
    # The plan of the last iteration is checked too: stopping at max_iter can be converged.
    count = int(sinkhorn(cost[:1].double(), max_iter=1000, **options).n_iter)
    assert sinkhorn(cost[:1].double(), max_iter=count, **options).converged.all()
    assert not sinkhorn(cost[:1].double(), max_iter=count - 1, **options).converged.any()
    assert sinkhorn(cost, max_iter=2, tol=None, epsilon=0.5).converged.all()


def _nonconvergence_warnings(call: object, times: int) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own: once per call site
        for _ in range(times):
            call()
    return [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_nonconvergence_warns_once_per_call_site() -> None:
    cost = 40 * torch.rand(3, 8, 5, generator=torch.Generator().manual_seed(8))
    module = SinkhornOT(epsilon=0.5, max_iter=5)
    caught = _nonconvergence_warnings(lambda: sinkhorn(cost, epsilon=0.5, max_iter=5), 3)
    caught += _nonconvergence_warnings(lambda: module(cost), 3)  # through nn.Module.__call__
    assert len(caught) == 2
    assert all(w.filename == __file__ for w in caught)  # the caller's line, not reidkit's
    assert str(caught[0].message) == (
        "sinkhorn: some problems stopped at max_iter=5 before meeting stop_rule='marginal' "
        "with tol=0.001, so their results are not converged; raise max_iter or epsilon, or "
        "loosen tol, or pass on_nonconvergence='ignore'"
    )
    assert not _nonconvergence_warnings(
        lambda: sinkhorn(cost, epsilon=0.5, max_iter=5, on_nonconvergence="ignore"), 1
    )
    with pytest.raises(RuntimeError) as error:
        sinkhorn(cost, epsilon=0.5, max_iter=5, on_nonconvergence="raise")
    assert str(error.value) == (
        "sinkhorn: 3 of 3 problems stopped at max_iter=5 before meeting stop_rule='marginal' "
        "with tol=0.001; raise max_iter or epsilon, or loosen tol"
    )


def test_marginals_within_the_accepted_imbalance_are_renormalised() -> None:
    cost = torch.rand(2, 6, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    a = torch.full((6,), (1 + 6e-4) / 6, dtype=torch.float64)  # e.g. rounded to float16
    result = sinkhorn(cost, a, epsilon=0.2, tol=1e-9, max_iter=5000, on_nonconvergence="raise")
    assert torch.allclose(result.plan.sum(dim=-1), a / a.sum(), atol=1e-9)
    assert (result.marginal_error <= 1e-9).all()


def test_an_empty_batch_gives_empty_results() -> None:
    cost = torch.rand(2, 0, 5, 3, requires_grad=True)
    mask = (torch.ones(5, dtype=torch.bool), None)
    result = sinkhorn(cost, epsilon=0.1, mask=mask)
    assert result.plan.shape == (2, 0, 5, 3) and result.distance.shape == (2, 0)
    assert result.f.shape == (2, 0, 5) and result.converged.shape == (2, 0)
    result.distance.sum().backward()
    assert cost.grad.shape == cost.shape


@pytest.mark.parametrize("epsilon", [np.float32(0.1), np.float64(0.1), torch.tensor(0.1)])
def test_epsilon_may_be_a_numpy_scalar_or_a_0d_tensor(epsilon: object) -> None:
    cost = torch.rand(3, 5, 4, generator=torch.Generator().manual_seed(10))
    expected = sinkhorn(cost, epsilon=float(epsilon)).plan
    assert torch.equal(sinkhorn(cost, epsilon=epsilon).plan, expected)
    assert torch.equal(SinkhornOT(epsilon=epsilon)(cost).plan, expected)


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
        ({"on_nonconvergence": "never"}, "on_nonconvergence"),
        ({"epsilon": torch.tensor([0.1])}, "epsilon"),
        ({"epsilon": True}, "epsilon"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_argument(kwargs: dict, message: str) -> None:
    arguments = {"cost": torch.rand(2, 2), "epsilon": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        sinkhorn(**arguments)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"mask": (torch.ones(2, dtype=torch.int64), None)},
            "mask[0] (row mask) must be a boolean tensor (True marks real entries), got dtype "
            "torch.int64",
        ),
        (
            {"mask": (None, [True, False])},
            "mask[1] (column mask) must be a boolean tensor (True marks real entries), got list",
        ),
        (
            {"cost": torch.tensor([[1e35, 0.0], [0.0, 1.0]]), "epsilon": 1e-3},
            "cost / epsilon must stay below 5.32e+36 in magnitude for torch.float32, got |cost| "
            "up to 1e+35 with epsilon=0.001: rescale the cost or raise epsilon",
        ),
    ],
)
def test_bad_input_messages(kwargs: dict, message: str) -> None:
    arguments = {"cost": torch.rand(2, 2), "epsilon": 0.1, **kwargs}
    with pytest.raises(ValueError) as error:
        sinkhorn(**arguments)
    assert str(error.value) == message


def test_module_validates_its_options() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        SinkhornOT(epsilon=0)


def test_explicit_triton_backend_with_unrolled_gradients_is_rejected() -> None:
    with pytest.raises(ValueError, match="backend='triton'"):
        sinkhorn(torch.rand(2, 3, 3), epsilon=0.1, backend="triton", grad="unrolled")
