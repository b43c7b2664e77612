"""Hypothesis strategies and float64 references shared by the optimal-transport tests."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

TIGHT = {"tol": 1e-11, "max_iter": 20_000}
# Float32 rounding of a Sinkhorn iterate, in units of 2^-24 (|cost| / epsilon + 1), over up to
# 30 iterations of random problems: a row update f_new - f is off by at most 8 units, a
# potential by at most 36 (measured on the torch solver and the Triton kernel); with a margin.
STEP_ULPS, LEVEL_ULPS = 32, 128


@st.composite
def ot_problems(draw: st.DrawFn, max_m: int = 9, max_n: int = 7, max_batch: int = 3) -> dict:
    """A batch of random problems: float64 cost ``(B, M, N)`` in [0, 1], marginals, epsilon."""
    batch = draw(st.integers(1, max_batch))
    m = draw(st.integers(1, max_m))
    n = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    # Sinkhorn contracts at a rate set by exp(-cost range / epsilon): these ranges converge to
    # 1e-11 within TIGHT["max_iter"] iterations, so every comparison below is at convergence.
    epsilon = draw(st.sampled_from([0.2, 0.5, 1.0]))
    uniform = draw(st.booleans())
    generator = torch.Generator().manual_seed(seed)
    cost = torch.rand(batch, m, n, generator=generator, dtype=torch.float64)
    if uniform:
        a = b = None
    else:
        a = torch.rand(batch, m, generator=generator, dtype=torch.float64) + 0.1
        b = torch.rand(batch, n, generator=generator, dtype=torch.float64) + 0.1
        a, b = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
    return {"cost": cost, "a": a, "b": b, "epsilon": epsilon}


def full_marginals(problem: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The marginals of ``problem`` with ``None`` replaced by uniform ones."""
    batch, m, n = problem["cost"].shape
    a = (
        problem["a"]
        if problem["a"] is not None
        else torch.full((batch, m), 1 / m, dtype=torch.float64)
    )
    b = (
        problem["b"]
        if problem["b"] is not None
        else torch.full((batch, n), 1 / n, dtype=torch.float64)
    )
    return a, b


def pot_plans(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, epsilon: float) -> np.ndarray:
    """POT's log-domain Sinkhorn, one problem at a time, run to tight convergence."""
    from ot.bregman import sinkhorn_log  # here: the kernel tests use this module without POT

    plans = [
        sinkhorn_log(ai.numpy(), bi.numpy(), ci.numpy(), epsilon, numItermax=20_000, stopThr=1e-12)
        for ci, ai, bi in zip(cost, a, b)
    ]
    return np.stack(plans)


def regularised_value(cost: torch.Tensor, plan: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``<T, C> + epsilon * sum T (log T - 1)``, the objective of MMPL eq. 14 (per problem)."""
    entropy_term = torch.where(plan > 0, plan * (plan.log() - 1), 0.0).sum(dim=(-2, -1))
    return (plan * cost).sum(dim=(-2, -1)) + epsilon * entropy_term


def reference_potentials(
    cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, epsilon: float, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 log-domain Sinkhorn iterates, in units of epsilon, written out independently.

    Args:
        cost: ``(B, M, N)``.
        a, b: ``(B, M)``, ``(B, N)`` marginals (zero mass gives potential ``-inf``).
        epsilon: entropic regularisation.
        iterations: number of iterations ``K``.

    Returns:
        ``f`` ``(K + 2, B, M)``: ``f[t]`` after ``t`` iterations (``f[0] = 0``) and ``f[K + 1]``
        the row update that would come next; ``g`` ``(K + 1, B, N)`` (``g[0] = 0``).
    """
    scaled = cost.double() / epsilon
    log_a, log_b = a.double().log(), b.double().log()
    f = [torch.zeros_like(log_a)]
    g = [torch.where(log_b > float("-inf"), 0.0, float("-inf"))]
    for _ in range(iterations + 1):
        f.append(log_a - torch.logsumexp(g[-1][:, None, :] - scaled, dim=2))
        if len(g) <= iterations:
            g.append(log_b - torch.logsumexp(f[-1][:, :, None] - scaled, dim=1))
    return torch.stack(f), torch.stack(g)


def allowed_outcomes(
    cost: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    epsilon: float,
    max_iter: int,
    stop_rule: str,
    tol: float | None,
) -> list[set[tuple[int, bool]]]:
    """The ``(n_iter, converged)`` pairs a correct float32 solver may return for each problem.

    The stop rule is evaluated on the float64 iterates of :func:`reference_potentials` with
    the float32 rounding errors of :data:`STEP_ULPS` and :data:`LEVEL_ULPS`: a problem may stop
    where the rule holds within them and may continue where it fails within them. Where every
    decision has a real margin, there is one outcome.

    Args:
        cost, a, b, epsilon: the problems, as in :func:`reference_potentials`.
        max_iter, stop_rule, tol: the solver options.

    Returns:
        One set per problem.
    """
    if tol is None:
        return [{(max_iter, True)} for _ in range(cost.shape[0])]
    f, _ = reference_potentials(cost, a, b, epsilon, max_iter)
    unit = 2.0**-24 * (float(cost.abs().max()) / epsilon + 1)
    checks = range(1, max_iter + 1) if stop_rule == "marginal" else range(1, max_iter)
    threshold = tol if stop_rule == "marginal" else np.log(tol) if tol > 0 else -np.inf
    may_stop, may_continue = [], []
    for t in checks:
        low, high = _residual_bounds(f[t], f[t + 1], cost, a, b, epsilon, stop_rule, unit)
        may_stop.append(low <= threshold)
        may_continue.append(~(high <= threshold))
    outcomes = []
    for problem in range(cost.shape[0]):
        allowed, running = set(), True
        for index, t in enumerate(checks):
            if running and bool(may_stop[index][problem]):
                # The marginal rule keeps the iterate it judged; the update rule applies it.
                allowed.add((t if stop_rule == "marginal" else t + 1, True))
            running = running and bool(may_continue[index][problem])
        if running:
            allowed.add((max_iter, False))
        outcomes.append(allowed)
    return outcomes


def _residual_bounds(
    f: torch.Tensor,
    f_new: torch.Tensor,
    cost: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    epsilon: float,
    stop_rule: str,
    unit: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B,)`` bounds of the stop rule's residual under float32 rounding (``unit``)."""
    real = a > 0
    step, slack = torch.where(real, f_new - f, 0.0), STEP_ULPS * unit
    smallest = (step.abs() - slack).clamp(min=0)
    largest = step.abs() + slack
    if stop_rule == "marginal":
        # sum_i a_i |exp(f_i - f_new_i) - 1|: |expm1| grows with |x| on either side of 0.
        ends = torch.stack([torch.expm1(-step - slack), torch.expm1(-step + slack)])
        low = torch.where(step.abs() <= slack, 0.0, ends.abs().amin(dim=0))
        weights = a.double()
        return (weights * low).sum(dim=1), (weights * ends.abs().amax(dim=0)).sum(dim=1)
    # log mean_i |exp(f_new_i) - exp(f_i)| on the cost shifted to mean 1 (reidkit.ot.solvers).
    entries = real[:, :, None] & (b > 0)[:, None, :]
    mean_cost = torch.where(entries, cost.double(), 0.0).sum(dim=(1, 2)) / entries.sum(dim=(1, 2))
    offset = (1 - mean_cost) / epsilon - real.sum(dim=1).double().log()
    larger = torch.maximum(f, f_new)

    def log_update(change: torch.Tensor, error: float) -> torch.Tensor:
        terms = torch.where(real, larger + torch.log(-torch.expm1(-change)), -np.inf)
        return torch.logsumexp(terms, dim=1) + offset + error

    level = LEVEL_ULPS * unit
    return log_update(smallest, -level), log_update(largest, level)


def paper_update_rule(
    cost: torch.Tensor, epsilon: float, tol: float, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MMPL's Sinkhorn as the public PLOT code runs it, in float64, uniform marginals.

    ``u <- a / (K v)``, ``v <- b / (K^T u)`` with ``K = exp(-C / epsilon)`` from ``v = 1``, and a
    problem stops after the iteration whose change ``mean |u_t - u_t-1|`` is ``<= tol``
    (MMPL sec. 4.2); the first iteration, whose change is from the start ``u = 1``, is not
    tested.

    Args:
        cost: ``(B, M, N)`` costs.
        epsilon, tol, max_iter: the solver options.

    Returns:
        The plans ``(B, M, N)``, the iterations each problem ran ``(B,)`` and the smallest
        relative distance ``|change / tol - 1|`` of a tested change to the threshold ``(B,)``.
    """
    batch, m, n = cost.shape
    kernel = torch.exp(-cost.double() / epsilon)
    a, b = torch.full((batch, m), 1 / m).double(), torch.full((batch, n), 1 / n).double()
    u, v = torch.ones_like(a), torch.ones_like(b)
    n_iter = torch.zeros(batch, dtype=torch.int64)
    margin = torch.full((batch,), float("inf")).double()
    running = torch.ones(batch, dtype=torch.bool)
    for iteration in range(max_iter):
        new_u = a / (kernel @ v[:, :, None])[:, :, 0]
        new_v = b / (kernel.transpose(1, 2) @ new_u[:, :, None])[:, :, 0]
        change = (new_u - u).abs().mean(dim=1)
        u = torch.where(running[:, None], new_u, u)
        v = torch.where(running[:, None], new_v, v)
        n_iter += running
        if iteration > 0:
            margin = torch.where(running, torch.minimum(margin, (change / tol - 1).abs()), margin)
            running &= ~(change <= tol)
    return u[:, :, None] * kernel * v[:, None, :], n_iter, margin
