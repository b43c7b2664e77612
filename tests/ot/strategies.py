"""Hypothesis strategies and float64 references shared by the optimal-transport tests."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from ot.bregman import sinkhorn_log

TIGHT = {"tol": 1e-11, "max_iter": 20_000}


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
    plans = [
        sinkhorn_log(ai.numpy(), bi.numpy(), ci.numpy(), epsilon, numItermax=20_000, stopThr=1e-12)
        for ci, ai, bi in zip(cost, a, b)
    ]
    return np.stack(plans)


def regularised_value(cost: torch.Tensor, plan: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``<T, C> + epsilon * sum T (log T - 1)``, the objective of MMPL eq. 14 (per problem)."""
    entropy_term = torch.where(plan > 0, plan * (plan.log() - 1), 0.0).sum(dim=(-2, -1))
    return (plan * cost).sum(dim=(-2, -1)) + epsilon * entropy_term
