"""The log-domain Sinkhorn loop on chip, shared by the cost-tile and feature-level forward kernels.

The iteration and the stop rules are those of :mod:`reidkit.ot.solvers` (MMPL eq. 17 in log
form, potentials in units of epsilon inside the loop), whose
:func:`~reidkit.ot.solvers.log_domain_potentials` is the plain-torch reference: one iteration
is a row update followed by a column update; the marginal rule judges the current plan before
a row update (and once more after the last iteration), the update rule judges a row update and
stops after applying it with its column update; a NaN residual never stops a problem.

The stop rule is a runtime argument (:data:`STOP_CODES`): one compiled loop serves all three,
which branch on it uniformly across a program.
"""

from __future__ import annotations

import triton
import triton.language as tl

from reidkit.ot.solvers import UPDATE_RULE_COST_MEAN, stop_threshold

FIXED_ITERATIONS = tl.constexpr(0)
MARGINAL_RULE = tl.constexpr(1)
UPDATE_RULE = tl.constexpr(2)
# stop_rule argument of the loop: tol=None runs max_iter iterations whatever the rule.
STOP_CODES = {
    "fixed": FIXED_ITERATIONS.value,
    "marginal": MARGINAL_RULE.value,
    "update": UPDATE_RULE.value,
}


def stop_arguments(tol: float | None, stop_rule: str, epsilon: float) -> dict[str, float | int]:
    """The stop-rule arguments of the forward kernels for the options of
    :func:`reidkit.sinkhorn`: ``stop_rule`` (a :data:`STOP_CODES` value), ``threshold``
    (``tol``, or ``log(tol)`` for the update rule) and ``cost_mean_over_epsilon``."""
    threshold = stop_threshold(tol, stop_rule)
    return {
        "stop_rule": STOP_CODES["fixed" if tol is None else stop_rule],
        "threshold": 0.0 if threshold is None else threshold,
        "cost_mean_over_epsilon": UPDATE_RULE_COST_MEAN / epsilon,
    }


@triton.jit
def logsumexp(values, axis: tl.constexpr):
    """Stable log-sum-exp along ``axis``; ``-inf`` where every entry is ``-inf``."""
    peak = tl.max(values, axis=axis)
    peak = tl.where(peak == float("-inf"), 0.0, peak)
    total = tl.sum(tl.exp(values - tl.expand_dims(peak, axis)), axis=axis)
    return peak + tl.log(total)


@triton.jit
def _expm1(step):
    """``exp(step) - 1`` without cancellation near 0 (Taylor series of degree 5 below 0.1)."""
    series = step * (1.0 + step * (0.5 + step * (1 / 6 + step * (1 / 24 + step / 120))))
    return tl.where(tl.abs(step) < 0.1, series, tl.exp(step) - 1.0)


@triton.jit
def _residual(f, new_f, a, row_valid, num_rows, offset, update_rule):
    """``(P,)`` the stop rule's measure of a row update from ``f`` to ``new_f``."""
    step = tl.where(row_valid, f, 0.0) - tl.where(row_valid, new_f, 0.0)
    if update_rule:
        # log mean_i |exp(new_f_i) - exp(f_i)| = log mean_i exp(max) (1 - exp(-|step|)), on
        # the cost shifted to mean 1, as reidkit.ot.solvers computes it.
        log_change = tl.maximum(f, new_f) + tl.log(-_expm1(-tl.abs(step)))
        log_change = tl.where(row_valid, log_change, float("-inf"))
        residual = logsumexp(log_change, axis=1) - tl.log(num_rows) + offset
    else:
        # Row sums of the current plan are a * exp(f - new_f): the L1 row-marginal error.
        residual = tl.sum(tl.where(row_valid, a * tl.abs(_expm1(step)), 0.0), axis=1)
    return residual


@triton.jit
def sinkhorn_loop(
    neg_cost,  # (P, BLOCK_M, BLOCK_N) -C / epsilon of P problems, -inf outside each problem
    log_a,  # (P, BLOCK_M) -inf on zero-mass or padded rows
    log_b,  # (P, BLOCK_N) -inf on zero-mass or padded columns
    max_iter,
    stop_rule,  # a STOP_CODES value
    threshold,  # tol (marginal rule) or log(tol) (update rule)
    cost_mean_over_epsilon,  # the update rule's reference mean of the cost, over epsilon
):
    """Log-domain Sinkhorn on P problems: ``f / eps``, ``g / eps``, counts and flags (P,)."""
    use_tol = stop_rule != FIXED_ITERATIONS
    update_rule = stop_rule == UPDATE_RULE
    row_valid = log_a > float("-inf")
    col_valid = log_b > float("-inf")
    a = tl.exp(log_a)
    num_rows = tl.maximum(tl.sum(row_valid.to(tl.float32), axis=1), 1.0)  # 0 past the batch
    finite_log_a = tl.where(row_valid, log_a, 0.0)  # no -inf - -inf on padded entries
    finite_log_b = tl.where(col_valid, log_b, 0.0)
    f = tl.zeros_like(log_a)
    g = tl.where(col_valid, 0.0, float("-inf"))
    n_iter = tl.zeros_like(num_rows).to(tl.int32)
    active = num_rows >= 0  # all True
    converged = active & (stop_rule == FIXED_ITERATIONS)  # no target to miss
    offset = tl.zeros_like(num_rows)
    if update_rule:
        # (1 - mean C) / epsilon over the real entries: the update on the cost shifted to mean 1.
        real = row_valid[:, :, None] & col_valid[:, None, :]
        total = tl.sum(tl.sum(tl.where(real, neg_cost, 0.0), axis=2), axis=1)
        count = tl.sum(tl.sum(real.to(tl.float32), axis=2), axis=1)
        offset = total / tl.maximum(count, 1.0) + cost_mean_over_epsilon
    # The marginal rule also checks the plan of the last iteration.
    last = max_iter + (stop_rule == MARGINAL_RULE).to(tl.int32)
    iteration = 0
    running = max_iter > 0
    while running:
        new_f = tl.where(
            row_valid, finite_log_a - logsumexp(neg_cost + g[:, None, :], axis=2), float("-inf")
        )
        settled = num_rows < 0  # all False
        if use_tol:
            residual = _residual(f, new_f, a, row_valid, num_rows, offset, update_rule)
            # A NaN residual compares False: it never counts as converged.
            settled = active & (iteration > 0) & (residual <= threshold)
        # The update rule applies the update it judged; the marginal rule keeps the iterate.
        applying = active & (update_rule | ~settled) & (iteration < max_iter)
        active = active & ~settled
        converged = converged | settled
        f = tl.where(applying[:, None], new_f, f)
        new_g = tl.where(
            col_valid, finite_log_b - logsumexp(neg_cost + f[:, :, None], axis=1), float("-inf")
        )
        g = tl.where(applying[:, None], new_g, g)
        n_iter += applying.to(tl.int32)
        iteration += 1
        running = (iteration < last) & (tl.max(active.to(tl.int32), axis=0) > 0)
    return f, g, n_iter, converged
