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

The two stopping rules (``tol`` is their threshold; NaN or infinity never counts as converged):

* ``"marginal"``: before a row update, stop if the current plan's row marginals are within
  ``tol`` in L1 (its column marginals are exact). The returned plan is the one that met the
  rule; the last check comes after the final iteration, so ``converged`` reports whether the
  returned plan meets it.
* ``"update"``: MMPL sec. 4.2 (from the PLOT code): stop once the row scaling changed by less
  than ``tol`` in one row update; that update and the column update after it are applied (as
  PLOT does). MMPL's measure is ``mean_i |u_t,i - u_t-1,i|`` with ``u = exp(f / epsilon)``.
  It depends on where the cost sits: adding ``c`` to ``C`` multiplies every ``u`` by
  ``exp(c / epsilon)`` and leaves the plan unchanged. reidkit therefore evaluates it on the
  cost shifted to a mean of 1 over the real entries, the mean of the cosine cost
  ``1 - cos`` between unrelated features, which is what MMPL and PLOT use::

      update = mean_i |exp(f_t,i / eps) - exp(f_t-1,i / eps)| * exp(-(mean(C) - 1) / eps)

  For a cosine cost whose mean is 1 this is exactly the paper's quantity; for any cost it is
  invariant to adding a constant, and it is computed in the log domain, so it never overflows.
  The first iteration is never tested: its change is from the arbitrary start ``g = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

# Largest cost range / epsilon for which exp(-C / epsilon) and the scalings stay normal numbers.
SCALING_DOMAIN_RANGE = {torch.float32: 50.0, torch.float64: 500.0}
# The update rule reads the row scaling of the cost shifted to this mean (module docstring).
UPDATE_RULE_COST_MEAN = 1.0


class Potentials(NamedTuple):
    """Dual potentials of a batch of problems, their iteration counts and convergence flags."""

    f: Tensor  # (B, M)
    g: Tensor  # (B, N)
    n_iter: Tensor  # (B,) int64
    converged: Tensor  # (B,) bool: the stop rule was met (always True with tol=None)


Problems = tuple[Tensor, ...]  # per-problem tensors, each with the batch as leading dimension


def stop_threshold(tol: float | None, stop_rule: str) -> float | None:
    """The bound the residuals of :func:`log_domain_potentials` are compared with.

    The update rule's residual is the logarithm of the update (it cannot overflow), so its
    threshold is ``log(tol)`` (``-inf`` for ``tol = 0``).
    """
    if tol is None or stop_rule == "marginal":
        return tol
    return math.log(tol) if tol > 0 else float("-inf")


def _iterate(
    update_rows: Callable[[Problems, Tensor], Tensor],
    update_cols: Callable[[Problems, Tensor], Tensor],
    residual: Callable[[Problems, Tensor, Tensor], Tensor],
    problems: Problems,
    rows: Tensor,
    cols: Tensor,
    max_iter: int,
    threshold: float | None,
    stop_after_update: bool,
    check_every: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The Sinkhorn loop shared by both domains, with per-problem freezing.

    At each host check, once at most half of the problems still run (and no gradient flows
    through the loop), the loop continues on those problems alone: late iterations cost what
    the slow problems need, not the whole batch.

    Args:
        update_rows: ``(problems, cols (B, N)) -> rows (B, M)``, the row half-step.
        update_cols: ``(problems, rows (B, M)) -> cols (B, N)``, the column half-step.
        residual: ``(problems, rows, new_rows) -> (B,)``, the stop rule's measure.
        problems: the per-problem data the steps read (kernel or cost, marginals, ...).
        rows, cols: initial row and column variables.
        max_iter: iteration cap.
        threshold: a problem has converged once its residual is ``<= threshold`` (never when
            it is NaN); ``None`` runs ``max_iter`` iterations.
        stop_after_update: ``False``: the residual judges the current iterate and a converged
            problem keeps it (the marginal rule, also checked after the last iteration);
            ``True``: the residual judges the row update, which is applied with its column
            update before the problem stops (the update rule).
        check_every: iterations between host checks for an early exit of the whole batch.

    Returns:
        Final ``rows``, ``cols``, the iteration count ``(B,)`` and the convergence flags
        ``(B,)`` of every problem.
    """
    batch = rows.shape[0]
    final_rows, final_cols = rows, cols
    n_iter = torch.zeros(batch, dtype=torch.int64, device=rows.device)
    times_settled = torch.zeros(batch, dtype=torch.int64, device=rows.device)  # 0 or 1
    running = torch.arange(batch, device=rows.device)  # problems in the current batch
    active = torch.ones(batch, dtype=torch.bool, device=rows.device)
    tracked = any(t.requires_grad for t in (rows, cols, *problems))
    can_compact = not (torch.is_grad_enabled() and tracked)
    final_check = threshold is not None and not stop_after_update
    for iteration in range(max_iter + int(final_check)):
        new_rows = update_rows(problems, cols)
        settled = torch.zeros_like(active)
        if threshold is not None and iteration > 0:
            with torch.no_grad():
                # NaN <= threshold is False: a NaN residual never counts as converged.
                settled = active & (residual(problems, rows, new_rows) <= threshold)
        applying = active if stop_after_update else active & ~settled
        active = active & ~settled
        times_settled = times_settled.index_add(0, running, settled.to(torch.int64))
        if iteration == max_iter:
            break  # the marginal rule's check of the final iterate
        keep_mask = applying[:, None]
        rows = torch.where(keep_mask, new_rows, rows)
        cols = torch.where(keep_mask, update_cols(problems, rows), cols)
        n_iter = n_iter.index_add(0, running, applying.to(torch.int64))
        if threshold is not None and iteration > 0 and iteration % check_every == 0:
            count = int(active.sum())
            if count == 0:
                break
            if can_compact and 2 * count <= active.numel():
                final_rows = final_rows.index_copy(0, running, rows)
                final_cols = final_cols.index_copy(0, running, cols)
                keep = active.nonzero().squeeze(1)
                running, active = running[keep], active[keep]
                problems = tuple(t[keep] for t in problems)
                rows, cols = rows[keep], cols[keep]
    converged = times_settled > 0 if threshold is not None else torch.ones_like(active)
    if running.numel() == batch:
        return rows, cols, n_iter, converged
    rows = final_rows.index_copy(0, running, rows)
    return rows, final_cols.index_copy(0, running, cols), n_iter, converged


def _update_rule_offset(cost: Tensor, a: Tensor, b: Tensor, epsilon: float) -> Tensor:
    """``(B,)`` ``(1 - mean C) / epsilon``, the mean over the entries of positive mass."""
    real = (a > 0)[:, :, None] & (b > 0)[:, None, :]
    mean = torch.where(real, cost, 0.0).sum(dim=(1, 2)) / real.sum(dim=(1, 2))
    return (UPDATE_RULE_COST_MEAN - mean) / epsilon


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
            of the row scaling, the MMPL/PLOT rule; see the module docstring).
        check_every: iterations between host checks for an early exit.

    Returns:
        :class:`Potentials` with ``f`` ``(B, M)``, ``g`` ``(B, N)``, ``n_iter`` and
        ``converged`` ``(B,)``.
    """

    def update_rows(problems: Problems, g: Tensor) -> Tensor:
        neg_cost, log_a, _, _, _ = problems
        return epsilon * (log_a - torch.logsumexp(neg_cost + g[:, None, :] / epsilon, dim=2))

    def update_cols(problems: Problems, f: Tensor) -> Tensor:
        neg_cost, _, log_b, _, _ = problems
        return epsilon * (log_b - torch.logsumexp(neg_cost + f[:, :, None] / epsilon, dim=1))

    def residual(problems: Problems, f: Tensor, f_new: Tensor) -> Tensor:
        _, _, _, a_, offset = problems
        if stop_rule == "marginal":
            # Row sums of the current plan are a * exp((f - f_new) / epsilon).
            error = a_ * torch.expm1((f - f_new) / epsilon).abs()
            return _masked_reduce(error, a_ > 0, mean=False)
        return _log_mean_change(f / epsilon, f_new / epsilon, a_ > 0) + offset

    offset = (
        _update_rule_offset(cost, a, b, epsilon)
        if stop_rule == "update"
        else a.new_zeros(a.shape[0])
    )
    problems = (cost / -epsilon, a.log(), b.log(), a, offset)
    f0 = torch.zeros_like(a)
    g0 = torch.where(b > 0, 0.0, float("-inf")).to(b.dtype)
    f, g, n_iter, converged = _iterate(
        update_rows,
        update_cols,
        residual,
        problems,
        f0,
        g0,
        max_iter,
        stop_threshold(tol, stop_rule),
        stop_rule == "update",
        check_every,
    )
    return Potentials(f, g, n_iter, converged)


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
        _, _, a_, _, offset = problems
        if stop_rule == "marginal":
            error = (a_ * u / u_new - a_).abs()  # row sums of the current plan are a u / u_new
            return _masked_reduce(error, a_ > 0, mean=False)
        # u is the scaling of the kernel shifted by the cost's minimum: offset undoes it.
        return _masked_reduce((u_new - u).abs(), a_ > 0, mean=True).log() + offset

    offset = (
        _update_rule_offset(cost, a, b, epsilon) + shift / epsilon
        if stop_rule == "update"
        else torch.zeros_like(shift)
    )
    problems = (kernel, kernel_t, a, b, offset)
    u0 = torch.ones_like(a)
    v0 = (b > 0).to(b.dtype)
    u, v, n_iter, converged = _iterate(
        update_rows,
        update_cols,
        residual,
        problems,
        u0,
        v0,
        max_iter,
        stop_threshold(tol, stop_rule),
        stop_rule == "update",
        check_every,
    )
    f = epsilon * u.log() + shift[:, None]
    g = epsilon * v.log()
    return Potentials(f, g, n_iter, converged)


def _log_mean_change(log_u: Tensor, log_u_new: Tensor, valid: Tensor) -> Tensor:
    """``log mean_i |exp(log_u_new_i) - exp(log_u_i)|`` over the ``valid`` rows, ``(B,)``.

    Computed as ``max(log_u, log_u_new) + log(1 - exp(-|log_u_new - log_u|))``, which cannot
    overflow; NaN stays NaN.
    """
    larger = torch.maximum(log_u, log_u_new)
    log_change = larger + torch.log(-torch.expm1(-(log_u_new - log_u).abs()))
    log_change = torch.where(valid, log_change, float("-inf"))
    return torch.logsumexp(log_change, dim=1) - valid.sum(dim=1).to(log_u.dtype).log()


def _masked_reduce(error: Tensor, valid: Tensor, *, mean: bool) -> Tensor:
    """Sum (or mean) of ``error`` ``(B, M)`` over the ``valid`` entries of each row."""
    total = torch.where(valid, error, 0.0).sum(dim=1)
    return total / valid.sum(dim=1) if mean else total


def choose_domain(cost: Tensor, epsilon: float) -> str:
    """``"scaling"`` when every problem's cost range over ``epsilon`` allows it, else ``"log"``.

    Args:
        cost: ``(B, M, N)`` costs (masked entries already filled with an in-range value),
            ``B >= 1``.
        epsilon: entropic regularisation.
    """
    limit = SCALING_DOMAIN_RANGE.get(cost.dtype, 0.0)
    spread = (cost.amax(dim=(1, 2)) - cost.amin(dim=(1, 2))).max()
    return "scaling" if float(spread) / epsilon <= limit else "log"
