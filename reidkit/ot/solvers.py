"""Sinkhorn iterations in plain torch: the CPU path, the test oracle and the benchmark baseline.

Both solvers work on a flat batch of problems and return dual potentials ``f`` ``(B, M)`` and
``g`` ``(B, N)`` such that the plan is ``exp((f_i + g_j - C_ij) / epsilon)`` (MMPL eq. 16 with
``u = exp(f / epsilon)``, ``v = exp(g / epsilon)``). Entries with zero mass (masked rows or
columns) get potential ``-inf``, so that their plan rows or columns are exactly zero.

One iteration is a row update followed by a column update (MMPL eq. 17), starting from
``g = 0``; after it the column marginals are exact and the row marginals carry the error.
Convergence is tested for every problem at every iteration on the device, and a converged
problem is frozen at once; the host looks at the flags every ``check_every`` iterations (every
iteration on the CPU, where a look costs nothing) to end the loop early and to drop the
converged problems from the batch, so the results do not depend on ``check_every``.

Inside the loop the batch is the last dimension of every tensor (rows ``(M, B)``, kernel
``(M, N, B)``): the many small problems of MMPL (48k problems of 10 x 4 to 80 x 8) then become
wide element-wise operations across problems instead of tiny per-problem matrix products. The
scaling-domain solver also works through the batch in chunks of about
:data:`CHUNK_ENTRIES` kernel entries, each iterated to convergence while its kernel
stays in the cache, and holds no batch-sized kernel.

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
from typing import NamedTuple, TypeVar

import torch
from torch import Tensor

# Largest cost range / epsilon for which exp(-C / epsilon) and the scalings stay normal numbers.
SCALING_DOMAIN_RANGE = {torch.float32: 50.0, torch.float64: 500.0}
# The update rule reads the row scaling of the cost shifted to this mean (module docstring).
UPDATE_RULE_COST_MEAN = 1.0
# Entries (M * N per problem) per chunk of a batch worked through in chunks: the scaling-domain
# solver's kernel and product workspace (16 MiB together in float32) stay in the last-level
# cache for all iterations, and each operation still spans enough problems to be worth its
# threads: many small chunks would multiply the operations, and each one waits for all threads.
CHUNK_ENTRIES = 1 << 21
# Once at most this fraction of the running problems is still active, the loop drops the rest.
_COMPACT_BELOW = 0.5


class Potentials(NamedTuple):
    """Dual potentials of a batch of problems, their iteration counts and convergence flags."""

    f: Tensor  # (B, M)
    g: Tensor  # (B, N)
    n_iter: Tensor  # (B,) int64
    converged: Tensor  # (B,) bool: the stop rule was met (always True with tol=None)


Problems = tuple[Tensor, ...]  # per-problem tensors, each with the batch as last dimension
AuxT = TypeVar("AuxT", Tensor, None)  # what a row half-step passes on to the residual


def stop_threshold(tol: float | None, stop_rule: str) -> float | None:
    """The bound the residuals of :func:`log_domain_potentials` are compared with.

    The update rule's residual is the logarithm of the update (it cannot overflow), so its
    threshold is ``log(tol)`` (``-inf`` for ``tol = 0``).
    """
    if tol is None or stop_rule == "marginal":
        return tol
    return math.log(tol) if tol > 0 else float("-inf")


def _iterate(
    update_rows: Callable[[Problems, Tensor], tuple[Tensor, AuxT]],
    update_cols: Callable[[Problems, Tensor], Tensor],
    residual: Callable[[Problems, Tensor, Tensor, AuxT], Tensor],
    select: Callable[[Problems, Tensor], Problems],
    problems: Problems,
    rows: Tensor,
    cols: Tensor,
    max_iter: int,
    threshold: float | None,
    stop_after_update: bool,
    check_every: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The Sinkhorn loop shared by both domains, with per-problem freezing.

    The batch is the last dimension of ``rows`` and ``cols``.
    At each host check, once at most :data:`_COMPACT_BELOW` of the running problems are still
    active (and no gradient flows through the loop), the loop continues on those alone: late
    iterations cost what the slow problems need, not the whole batch.

    Args:
        update_rows: ``(problems, cols (N, B)) -> (rows (M, B), aux)``, the row half-step and
            whatever of it the residual reads (or ``None``).
        update_cols: ``(problems, rows (M, B)) -> cols (N, B)``, the column half-step.
        residual: ``(problems, rows, new_rows, aux) -> (B,)``, the stop rule's measure.
        select: ``(problems, indices) -> problems`` of the problems at ``indices`` only.
        problems: the per-problem data the steps read (kernel or cost, marginals, ...).
        rows, cols: initial row ``(M, B)`` and column ``(N, B)`` variables.
        max_iter: iteration cap.
        threshold: a problem has converged once its residual is ``<= threshold`` (never when
            it is NaN); ``None`` runs ``max_iter`` iterations.
        stop_after_update: ``False``: the residual judges the current iterate and a converged
            problem keeps it (the marginal rule, also checked after the last iteration);
            ``True``: the residual judges the row update, which is applied with its column
            update before the problem stops (the update rule).
        check_every: iterations between host checks on an accelerator (every iteration on
            the CPU).

    Returns:
        Final ``rows``, ``cols``, the iteration count ``(B,)`` and the convergence flags
        ``(B,)`` of every problem.
    """
    batch = rows.shape[-1]
    device = rows.device
    tracked = any(t.requires_grad for t in (rows, cols, *problems))
    can_compact = not (torch.is_grad_enabled() and tracked)
    check_every = 1 if device.type == "cpu" else check_every
    final_check = threshold is not None and not stop_after_update
    done_rows, done_cols = rows, cols  # problems dropped from the batch leave their results here
    done_iter = torch.full((batch,), max_iter, dtype=torch.int64, device=device)
    running = torch.arange(batch, device=device)  # problems in the current batch
    active = torch.ones(batch, dtype=torch.bool, device=device)
    # Iterations applied: n_iter, plus `uniform` applied to every running problem (no op).
    n_iter = torch.zeros(batch, dtype=torch.int64, device=device)
    uniform = 0
    count, counted = batch, True  # active problems, and whether the host's count is current
    for iteration in range(max_iter + int(final_check)):
        new_rows, aux = update_rows(problems, cols)
        applying = active
        all_apply = counted and count == active.numel()
        checked = threshold is not None and iteration > 0
        if threshold is not None and checked:
            with torch.no_grad():
                # NaN <= threshold is False: a NaN residual never counts as converged.
                unsettled = residual(problems, rows, new_rows, aux).le(threshold).logical_not_()
            active = unsettled.logical_and_(active)
            counted = iteration % check_every == 0
            if counted:
                count = int(active.sum())
            if not stop_after_update:  # a problem that met the rule keeps its iterate
                applying = active
                all_apply = counted and count == active.numel()
        if iteration == max_iter:
            break  # the marginal rule's check of the final iterate
        if all_apply:
            uniform += 1
            rows = new_rows
            cols = update_cols(problems, rows)
        else:
            n_iter.add_(applying)
            keep_mask = applying[None, :]
            rows = torch.where(keep_mask, new_rows, rows)
            cols = torch.where(keep_mask, update_cols(problems, rows), cols)
        if checked and counted:
            if count == 0:
                break
            if can_compact and count <= _COMPACT_BELOW * active.numel():
                done_rows = done_rows.index_copy(-1, running, rows)
                done_cols = done_cols.index_copy(-1, running, cols)
                done_iter = done_iter.index_copy(0, running, n_iter + uniform)
                keep = active.nonzero().squeeze(1)
                running, active, n_iter = running[keep], active[keep], n_iter[keep]
                problems = select(problems, keep)
                rows, cols = rows[:, keep], cols[:, keep]
    n_iter += uniform
    # Dropped problems met the rule; the running ones met it unless still active.
    converged = torch.ones(batch, dtype=torch.bool, device=device)
    if threshold is not None:
        converged = converged.index_copy(0, running, ~active)
    if running.numel() == batch:
        return rows, cols, n_iter, converged
    rows = done_rows.index_copy(-1, running, rows)
    cols = done_cols.index_copy(-1, running, cols)
    return rows, cols, done_iter.index_copy(0, running, n_iter), converged


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
    """Log-domain Sinkhorn: stable for any cost range and epsilon; differentiable (unrolled).

    Args:
        cost: ``(B, M, N)`` finite costs.
        a: ``(B, M)`` row marginals (zeros on masked rows).
        b: ``(B, N)`` column marginals (zeros on masked columns).
        epsilon: entropic regularisation (MMPL's lambda, POT's ``reg``).
        max_iter: iteration cap.
        tol: threshold of ``stop_rule``; ``None`` runs exactly ``max_iter`` iterations.
        stop_rule: ``"marginal"`` (L1 row-marginal error) or ``"update"`` (mean absolute change
            of the row scaling, the MMPL/PLOT rule; see the module docstring).
        check_every: iterations between host checks for an early exit on an accelerator.

    Returns:
        :class:`Potentials` with ``f`` ``(B, M)``, ``g`` ``(B, N)``, ``n_iter`` and
        ``converged`` ``(B,)``.
    """

    # The problems are stored batch-first, as the cost: each half-step reduces over the
    # contiguous rows of its (B, M, N) exponent, and works on the potentials transposed.
    def update_rows(problems: Problems, g: Tensor) -> tuple[Tensor, None]:
        neg_cost, log_a, _, _, _ = problems
        lse = torch.logsumexp(neg_cost + g.T[:, None, :] / epsilon, dim=2)
        return (epsilon * (log_a - lse)).T, None

    def update_cols(problems: Problems, f: Tensor) -> Tensor:
        neg_cost, _, log_b, _, _ = problems
        lse = torch.logsumexp(neg_cost + f.T[:, :, None] / epsilon, dim=1)
        return (epsilon * (log_b - lse)).T

    def residual(problems: Problems, f: Tensor, f_new: Tensor, _aux: None) -> Tensor:
        _, _, _, a_, offset = problems
        if stop_rule == "marginal":
            # Row sums of the current plan are a * exp((f - f_new) / epsilon).
            error = a_ * torch.expm1((f - f_new).T / epsilon).abs()
            return torch.where(a_ > 0, error, 0.0).sum(dim=1)
        return _log_mean_change(f.T / epsilon, f_new.T / epsilon, a_ > 0) + offset

    def select(problems: Problems, keep: Tensor) -> Problems:
        return tuple(t[keep] for t in problems)

    offset = (
        _update_rule_offset(cost, a, b, epsilon)
        if stop_rule == "update"
        else a.new_zeros(a.shape[0])
    )
    problems = (cost / -epsilon, a.log(), b.log(), a, offset)
    f0 = torch.zeros_like(a).T
    g0 = torch.where(b > 0, 0.0, float("-inf")).to(b.dtype).T
    f, g, n_iter, converged = _iterate(
        update_rows,
        update_cols,
        residual,
        select,
        problems,
        f0,
        g0,
        max_iter,
        stop_threshold(tol, stop_rule),
        stop_rule == "update",
        check_every,
    )
    return Potentials(f.T.contiguous(), g.T.contiguous(), n_iter, converged)


@torch.no_grad()
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
    """Scaling-domain Sinkhorn (MMPL eq. 16-17), chunked over the batch; not differentiable.

    Each chunk of problems gets its kernel ``exp(-(C - min C) / epsilon)`` in a reused
    problems-last buffer and is iterated to convergence before the next one starts; a half-step
    is one product with the kernel into a reused workspace and one sum over rows or columns.

    Requires ``(cost.max() - cost.min()) / epsilon`` per problem below
    :data:`SCALING_DOMAIN_RANGE` for the dtype (cosine costs with ``epsilon >= 0.04`` always
    qualify); :func:`choose_domain` checks it. Arguments and result as in
    :func:`log_domain_potentials`.
    """
    batch, m, n = cost.shape
    shift = cost.amin(dim=(1, 2))  # (B,) keeps the largest kernel entry of each problem at 1
    if stop_rule == "update":
        # u is the scaling of the kernel shifted by the cost's minimum: the offset undoes it,
        # and takes the mean over the real rows.
        real_rows = (a > 0).sum(dim=1).to(a.dtype)
        offset = _update_rule_offset(cost, a, b, epsilon) + shift / epsilon - real_rows.log()
    else:
        offset = torch.zeros_like(shift)
    chunk = max(1, min(batch, CHUNK_ENTRIES // (m * n)))
    kernel_buffer = cost.new_empty(m, n, chunk)
    workspace = torch.empty_like(kernel_buffer)

    def update_rows(problems: Problems, v: Tensor) -> tuple[Tensor, Tensor]:
        kernel, a_, _, _ = problems
        product = workspace[:, :, : kernel.shape[-1]]
        row_sums = torch.mul(kernel, v[None, :, :], out=product).sum(dim=1)
        return a_ / row_sums, row_sums

    def update_cols(problems: Problems, u: Tensor) -> Tensor:
        kernel, _, b_, _ = problems
        product = workspace[:, :, : kernel.shape[-1]]
        return b_ / torch.mul(kernel, u[:, None, :], out=product).sum(dim=0)

    def residual(problems: Problems, u: Tensor, u_new: Tensor, row_sums: Tensor) -> Tensor:
        offset_ = problems[3]
        if stop_rule == "marginal":
            # The current plan's row sums are u * row_sums = a u / u_new: their error is
            # (u - u_new) * row_sums, exactly 0 at a fixed point and on masked rows (u = 0).
            return (u - u_new).mul_(row_sums).abs_().sum(dim=0)
        # Masked rows have u = u_new = 0 after the first iteration: the sum is over real rows.
        return (u_new - u).abs_().sum(dim=0).log_() + offset_

    def select(problems: Problems, keep: Tensor) -> Problems:
        return tuple(t[..., keep] for t in problems)

    f = cost.new_empty(batch, m)
    g = cost.new_empty(batch, n)
    n_iter = torch.empty(batch, dtype=torch.int64, device=cost.device)
    converged = torch.empty(batch, dtype=torch.bool, device=cost.device)
    threshold = stop_threshold(tol, stop_rule)
    for start in range(0, batch, chunk):
        stop = min(start + chunk, batch)
        kernel = kernel_buffer[:, :, : stop - start]
        chunk_shift = shift[start:stop]
        # exp(-(C - shift) / epsilon) in two passes, the first one transposing the chunk.
        torch.add(
            chunk_shift / epsilon, cost[start:stop].permute(1, 2, 0), alpha=-1 / epsilon, out=kernel
        )
        kernel.exp_()
        a_chunk, b_chunk = a[start:stop].T.contiguous(), b[start:stop].T.contiguous()
        problems = (kernel, a_chunk, b_chunk, offset[start:stop])
        u, v, n_iter[start:stop], converged[start:stop] = _iterate(
            update_rows,
            update_cols,
            residual,
            select,
            problems,
            torch.ones_like(a_chunk),
            (b_chunk > 0).to(b.dtype),
            max_iter,
            threshold,
            stop_rule == "update",
            check_every,
        )
        f[start:stop] = (epsilon * u.log()).T + chunk_shift[:, None]
        g[start:stop] = (epsilon * v.log()).T
    return Potentials(f, g, n_iter, converged)


def _log_mean_change(log_u: Tensor, log_u_new: Tensor, valid: Tensor) -> Tensor:
    """``log mean_i |exp(log_u_new_i) - exp(log_u_i)|`` over the ``valid`` rows, ``(B,)``.

    The rows are the last dimension (``(B, M)``). Computed as
    ``max(log_u, log_u_new) + log(1 - exp(-|log_u_new - log_u|))``, which cannot overflow;
    NaN stays NaN.
    """
    larger = torch.maximum(log_u, log_u_new)
    log_change = larger + torch.log(-torch.expm1(-(log_u_new - log_u).abs()))
    log_change = torch.where(valid, log_change, float("-inf"))
    return torch.logsumexp(log_change, dim=1) - valid.sum(dim=1).to(log_u.dtype).log()


def choose_domain(cost: Tensor, epsilon: float) -> str:
    """``"scaling"`` when every problem's cost range over ``epsilon`` allows it, else ``"log"``.

    Args:
        cost: ``(B, M, N)`` costs (masked entries already filled with an in-range value),
            ``B >= 1``.
        epsilon: entropic regularisation.
    """
    limit = SCALING_DOMAIN_RANGE.get(cost.dtype, 0.0)
    low, high = torch.aminmax(cost)  # one fast pass settles it when the whole batch fits
    if float(high - low) / epsilon <= limit:
        return "scaling"
    spread = cost.amax(dim=(1, 2)) - cost.amin(dim=(1, 2))
    return "scaling" if float(spread.max()) / epsilon <= limit else "log"
