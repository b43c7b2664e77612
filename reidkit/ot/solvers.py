"""Sinkhorn iterations in plain torch: the CPU path, the test oracle and the benchmark baseline.

Both solvers work on a flat batch of problems and return dual potentials ``f`` ``(B, M)`` and
``g`` ``(B, N)`` such that the plan is ``exp((f_i + g_j - C_ij) / epsilon)`` (MMPL eq. 16 with
``u = exp(f / epsilon)``, ``v = exp(g / epsilon)``). Entries with zero mass (masked rows or
columns) get potential ``-inf``, so that their plan rows or columns are exactly zero.

One iteration is a row update followed by a column update (MMPL eq. 17), starting from
``g = 0``; after it the column marginals are exact and the row marginals carry the error.
Convergence is tested for every problem at every iteration on the device, and a converged
problem is frozen at once; the host only looks at the flags every ``check_every`` iterations to
end the loop early, so the results do not depend on ``check_every``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

# Largest cost range / epsilon for which exp(-C / epsilon) and the scalings stay normal numbers.
SCALING_DOMAIN_RANGE = {torch.float32: 50.0, torch.float64: 500.0}


class Potentials(NamedTuple):
    """Dual potentials of a batch of problems and the iterations each problem used."""

    f: Tensor  # (B, M)
    g: Tensor  # (B, N)
    n_iter: Tensor  # (B,) int64


Problems = tuple[Tensor, ...]  # per-problem tensors, each with the batch as leading dimension


def _iterate(
    update_rows: Callable[[Problems, Tensor], Tensor],
    update_cols: Callable[[Problems, Tensor], Tensor],
    residual: Callable[[Problems, Tensor, Tensor], Tensor],
    problems: Problems,
    rows: Tensor,
    cols: Tensor,
    max_iter: int,
    tol: float | None,
    check_every: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """The Sinkhorn loop shared by both domains, with per-problem freezing.

    At each host check, once at most half of the problems still run (and no gradient flows
    through the loop), the loop continues on those problems alone: late iterations cost what
    the slow problems need, not the whole batch.

    Args:
        update_rows: ``(problems, cols (B, N)) -> rows (B, M)``, the row half-step.
        update_cols: ``(problems, rows (B, M)) -> cols (B, N)``, the column half-step.
        residual: ``(problems, rows, new_rows) -> (B,)`` stopping measure of the current iterate.
        problems: the per-problem data the steps read (kernel or cost, marginals, ...).
        rows, cols: initial row and column variables.
        max_iter: iteration cap.
        tol: stop a problem once its residual is ``<= tol``; ``None`` runs ``max_iter``.
        check_every: iterations between host checks for an early exit of the whole batch.

    Returns:
        Final ``rows``, ``cols`` and the iteration count of every problem ``(B,)``.
    """
    final_rows, final_cols = rows, cols
    n_iter = torch.zeros(rows.shape[0], dtype=torch.int64, device=rows.device)
    running = torch.arange(rows.shape[0], device=rows.device)  # problems in the current batch
    active = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
    tracked = any(t.requires_grad for t in (rows, cols, *problems))
    can_compact = not (torch.is_grad_enabled() and tracked)
    for iteration in range(max_iter):
        new_rows = update_rows(problems, cols)
        if tol is not None and iteration > 0:
            with torch.no_grad():
                active = active & (residual(problems, rows, new_rows) > tol)
            if iteration % check_every == 0:
                count = int(active.sum())
                if count == 0:
                    break
                if can_compact and 2 * count <= active.numel():
                    final_rows = final_rows.index_copy(0, running, rows)
                    final_cols = final_cols.index_copy(0, running, cols)
                    keep = active.nonzero().squeeze(1)
                    running, active = running[keep], active[keep]
                    problems = tuple(t[keep] for t in problems)
                    rows, cols, new_rows = rows[keep], cols[keep], new_rows[keep]
        keep_mask = active[:, None]
        rows = torch.where(keep_mask, new_rows, rows)
        cols = torch.where(keep_mask, update_cols(problems, rows), cols)
        n_iter = n_iter.index_add(0, running, active.to(torch.int64))
    if running.numel() == final_rows.shape[0]:
        return rows, cols, n_iter
    return final_rows.index_copy(0, running, rows), final_cols.index_copy(0, running, cols), n_iter


def log_domain_potentials(
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    epsilon: float,
    max_iter: int,
    tol: float | None,
    stop_rule: str = "marginal",
    check_every: int = 10,
) -> Potentials:
    """Log-domain Sinkhorn: stable for any cost range and epsilon.

    Args:
        cost: ``(B, M, N)`` finite costs.
        a: ``(B, M)`` row marginals (zeros on masked rows).
        b: ``(B, N)`` column marginals (zeros on masked columns).
        epsilon: entropic regularisation (MMPL's lambda, POT's ``reg``).
        max_iter: iteration cap.
        tol: threshold of ``stop_rule``; ``None`` runs exactly ``max_iter`` iterations.
        stop_rule: ``"marginal"`` (L1 row-marginal error) or ``"update"`` (mean absolute change
            of the row scaling ``u = exp(f / epsilon)``, the MMPL/PLOT rule).
        check_every: iterations between host checks for an early exit.

    Returns:
        :class:`Potentials` with ``f`` ``(B, M)``, ``g`` ``(B, N)`` and ``n_iter`` ``(B,)``.
    """

    def update_rows(problems: Problems, g: Tensor) -> Tensor:
        neg_cost, log_a, _, _ = problems
        return epsilon * (log_a - torch.logsumexp(neg_cost + g[:, None, :] / epsilon, dim=2))

    def update_cols(problems: Problems, f: Tensor) -> Tensor:
        neg_cost, _, log_b, _ = problems
        return epsilon * (log_b - torch.logsumexp(neg_cost + f[:, :, None] / epsilon, dim=1))

    def residual(problems: Problems, f: Tensor, f_new: Tensor) -> Tensor:
        _, _, _, a_ = problems
        if stop_rule == "marginal":
            # Row sums of the current plan are a * exp((f - f_new) / epsilon).
            error = a_ * torch.expm1((f - f_new) / epsilon).abs()
        else:
            error = (torch.exp(f_new / epsilon) - torch.exp(f / epsilon)).abs()
        return _masked_reduce(error, a_ > 0, mean=stop_rule == "update")

    problems = (cost / -epsilon, a.log(), b.log(), a)
    f0 = torch.zeros_like(a)
    g0 = torch.where(b > 0, 0.0, float("-inf")).to(b.dtype)
    f, g, n_iter = _iterate(
        update_rows, update_cols, residual, problems, f0, g0, max_iter, tol, check_every
    )
    return Potentials(f, g, n_iter)


def scaling_domain_potentials(
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    epsilon: float,
    max_iter: int,
    tol: float | None,
    stop_rule: str = "marginal",
    check_every: int = 10,
) -> Potentials:
    """Scaling-domain Sinkhorn (MMPL eq. 16-17): two batched mat-vecs per iteration.

    Requires ``(cost.max() - cost.min()) / epsilon`` per problem below
    :data:`SCALING_DOMAIN_RANGE` for the dtype (cosine costs with ``epsilon >= 0.04`` always
    qualify); :func:`choose_domain` checks it. Arguments and result as in
    :func:`log_domain_potentials`.
    """
    shift = cost.amin(dim=(1, 2))  # (B,) keeps the largest kernel entry of each problem at 1
    kernel = torch.exp((cost - shift[:, None, None]) / -epsilon)  # (B, M, N)
    # Both mat-vecs as (1, K) x (K, J) row-vector products on contiguous matrices: far faster
    # than (J, K) x (K, 1) for the many small problems of MMPL (e.g. 48k problems of 80 x 8).
    kernel_t = kernel.transpose(1, 2).contiguous()

    def update_rows(problems: Problems, v: Tensor) -> Tensor:
        _, kernel_t_, a_, _, _ = problems
        return a_ / torch.bmm(v[:, None, :], kernel_t_).squeeze(1)

    def update_cols(problems: Problems, u: Tensor) -> Tensor:
        kernel_, _, _, b_, _ = problems
        return b_ / torch.bmm(u[:, None, :], kernel_).squeeze(1)

    def residual(problems: Problems, u: Tensor, u_new: Tensor) -> Tensor:
        _, _, a_, _, shift_ = problems
        if stop_rule == "marginal":
            error = (a_ * u / u_new - a_).abs()  # row sums of the current plan are a u / u_new
        else:
            error = (u_new - u).abs() * torch.exp(shift_ / epsilon)[:, None]
        return _masked_reduce(error, a_ > 0, mean=stop_rule == "update")

    problems = (kernel, kernel_t, a, b, shift)
    u0 = torch.ones_like(a)
    v0 = (b > 0).to(b.dtype)
    u, v, n_iter = _iterate(
        update_rows, update_cols, residual, problems, u0, v0, max_iter, tol, check_every
    )
    f = epsilon * u.log() + shift[:, None]
    g = epsilon * v.log()
    return Potentials(f, g, n_iter)


def _masked_reduce(error: Tensor, valid: Tensor, *, mean: bool) -> Tensor:
    """Sum (or mean) of ``error`` ``(B, M)`` over the ``valid`` entries of each row."""
    total = torch.where(valid, error, 0.0).sum(dim=1)
    return total / valid.sum(dim=1) if mean else total


def choose_domain(cost: Tensor, epsilon: float) -> str:
    """``"scaling"`` when every problem's cost range over ``epsilon`` allows it, else ``"log"``.

    Args:
        cost: ``(B, M, N)`` costs (masked entries already filled with an in-range value).
        epsilon: entropic regularisation.
    """
    limit = SCALING_DOMAIN_RANGE.get(cost.dtype, 0.0)
    spread = (cost.amax(dim=(1, 2)) - cost.amin(dim=(1, 2))).max()
    return "scaling" if float(spread) / epsilon <= limit else "log"
