"""Triton kernels: the whole log-domain Sinkhorn loop on chip, and its feature-level backward.

Three kernels, each with its launcher:

* :func:`sinkhorn_potentials` (cost-tile entry): each program loads a tile of
  ``PROBLEMS`` cost matrices once, keeps it in registers across all iterations and writes only
  the potentials ``f``, ``g`` and the iteration counts.
* :func:`pairwise_potentials` (feature-level forward, MMPL eq. 13-19): the program of the pair
  ``(b, l)`` builds the cost ``1 - x[b] y[l]^T`` on chip with ``tl.dot``, runs the loop and
  writes the distance and the potentials.
* :func:`pairwise_feature_grads` (feature-level backward): the program of ``(b, l)`` rebuilds
  the cost and the plan from the potentials, forms ``d distance / d cost`` (envelope, or
  implicit with the per-problem linear solve done on chip) and accumulates the gradients of
  ``x[b]`` and ``y[l]`` with atomic adds.

:class:`PairwiseOTDistance` ties the two feature-level kernels into an autograd function, which
:func:`reidkit.pairwise_ot_distance` calls on the Triton path. No ``(B, L, M, N)`` tensor and
no iterate is ever stored.

The iteration and the stopping rules are those of :mod:`reidkit.ot.solvers` (MMPL eq. 17 in
log form, potentials in units of epsilon inside the loop): one iteration is a row update
followed by a column update; the marginal rule judges the current plan before a row update
(and once more after the last iteration), the update rule judges a row update and stops after
applying it with its column update; a NaN residual never stops a problem. The implicit
backward solves the regularised system of :mod:`reidkit.ot.implicit`. Importing this module
imports Triton; :mod:`reidkit.kernels` does not.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from reidkit.kernels import MIN_DOT_BLOCK, padded_block
from reidkit.ot.implicit import RIDGE
from reidkit.ot.solvers import UPDATE_RULE_COST_MEAN, Potentials, stop_threshold

_PROGRAM_TILE = 1024  # cost entries per program of the cost-tile kernel (problems are packed)
_MAX_PROBLEMS = 16  # problems per program of the cost-tile kernel


@triton.jit
def _logsumexp(values, axis: tl.constexpr):
    """Stable log-sum-exp along ``axis``; ``-inf`` where every entry is ``-inf``."""
    peak = tl.max(values, axis=axis)
    peak = tl.where(peak == float("-inf"), 0.0, peak)
    total = tl.sum(tl.exp(values - tl.expand_dims(peak, axis)), axis=axis)
    return peak + tl.log(total)


@triton.jit
def _sinkhorn_loop(
    neg_cost,  # (P, BLOCK_M, BLOCK_N) -C / epsilon of P problems, -inf outside each problem
    log_a,  # (P, BLOCK_M) -inf on zero-mass or padded rows
    log_b,  # (P, BLOCK_N) -inf on zero-mass or padded columns
    max_iter,
    threshold,  # tol (marginal rule) or log(tol) (update rule)
    cost_mean_over_epsilon,  # the update rule's reference mean of the cost, over epsilon
    USE_TOL: tl.constexpr,
    UPDATE_RULE: tl.constexpr,
):
    """Log-domain Sinkhorn on P problems: ``f / eps``, ``g / eps``, counts and flags (P,)."""
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
    converged = num_rows < 0  # all False
    if not USE_TOL:
        converged = active  # no target to miss
    offset = tl.zeros_like(num_rows)
    if UPDATE_RULE:
        # (1 - mean C) / epsilon over the real entries: the update on the cost shifted to mean 1.
        real = row_valid[:, :, None] & col_valid[:, None, :]
        total = tl.sum(tl.sum(tl.where(real, neg_cost, 0.0), axis=2), axis=1)
        count = tl.sum(tl.sum(real.to(tl.float32), axis=2), axis=1)
        offset = total / tl.maximum(count, 1.0) + cost_mean_over_epsilon
    last = max_iter
    if USE_TOL and not UPDATE_RULE:
        last = max_iter + 1  # the marginal rule also checks the plan of the last iteration
    iteration = 0
    running = max_iter > 0
    while running:
        new_f = tl.where(
            row_valid, finite_log_a - _logsumexp(neg_cost + g[:, None, :], axis=2), float("-inf")
        )
        settled = num_rows < 0  # all False
        if USE_TOL:
            step = tl.where(row_valid, f, 0.0) - tl.where(row_valid, new_f, 0.0)
            if UPDATE_RULE:
                step = -tl.abs(step)
            # expm1(step), without cancellation near 0 (Taylor series of degree 5 below 0.1).
            series = step * (1.0 + step * (0.5 + step * (1 / 6 + step * (1 / 24 + step / 120))))
            expm1 = tl.where(tl.abs(step) < 0.1, series, tl.exp(step) - 1.0)
            if UPDATE_RULE:
                # log mean_i |exp(new_f_i) - exp(f_i)| = log mean_i exp(max) (1 - exp(-|step|)),
                # on the cost shifted to mean 1, as reidkit.ot.solvers computes it.
                log_change = tl.maximum(f, new_f) + tl.log(-expm1)
                log_change = tl.where(row_valid, log_change, float("-inf"))
                residual = _logsumexp(log_change, axis=1) - tl.log(num_rows) + offset
            else:
                # Row sums of the current plan are a * exp(f - new_f): L1 row-marginal error.
                residual = tl.sum(tl.where(row_valid, a * tl.abs(expm1), 0.0), axis=1)
            # A NaN residual compares False: it never counts as converged.
            settled = active & (iteration > 0) & (residual <= threshold)
        # The update rule applies the update it judged; the marginal rule keeps the iterate.
        applying = active
        if not UPDATE_RULE:
            applying = active & ~settled
        applying = applying & (iteration < max_iter)
        active = active & ~settled
        converged = converged | settled
        f = tl.where(applying[:, None], new_f, f)
        new_g = tl.where(
            col_valid, finite_log_b - _logsumexp(neg_cost + f[:, :, None], axis=1), float("-inf")
        )
        g = tl.where(applying[:, None], new_g, g)
        n_iter += applying.to(tl.int32)
        iteration += 1
        running = (iteration < last) & (tl.max(active.to(tl.int32), axis=0) > 0)
    return f, g, n_iter, converged


@triton.jit
def _sinkhorn_cost_kernel(
    cost_ptr,
    a_ptr,
    b_ptr,
    f_ptr,
    g_ptr,
    n_iter_ptr,
    converged_ptr,
    batch,
    m,
    n,
    stride_cb,
    stride_cm,
    stride_cn,
    inv_epsilon,
    epsilon,
    max_iter,
    threshold,
    cost_mean_over_epsilon,
    USE_TOL: tl.constexpr,
    UPDATE_RULE: tl.constexpr,
    PROBLEMS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    problems = tl.program_id(0) * PROBLEMS + tl.arange(0, PROBLEMS)
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    in_batch = problems < batch
    problems = problems.to(tl.int64)
    in_rows = in_batch[:, None] & (rows[None, :] < m)  # (P, BLOCK_M)
    in_cols = in_batch[:, None] & (cols[None, :] < n)  # (P, BLOCK_N)
    tile = in_rows[:, :, None] & in_cols[:, None, :]
    offsets = (
        problems[:, None, None] * stride_cb
        + rows[None, :, None] * stride_cm
        + cols[None, None, :] * stride_cn
    )
    cost = tl.load(cost_ptr + offsets, mask=tile, other=0.0).to(tl.float32)
    neg_cost = tl.where(tile, -cost * inv_epsilon, float("-inf"))
    row_offsets = problems[:, None] * m + rows[None, :]
    col_offsets = problems[:, None] * n + cols[None, :]
    a = tl.load(a_ptr + row_offsets, mask=in_rows, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + col_offsets, mask=in_cols, other=0.0).to(tl.float32)
    f, g, n_iter, converged = _sinkhorn_loop(
        neg_cost,
        tl.log(a),
        tl.log(b),
        max_iter,
        threshold,
        cost_mean_over_epsilon,
        USE_TOL,
        UPDATE_RULE,
    )
    tl.store(f_ptr + row_offsets, f * epsilon, mask=in_rows)
    tl.store(g_ptr + col_offsets, g * epsilon, mask=in_cols)
    tl.store(n_iter_ptr + problems, n_iter, mask=in_batch)
    tl.store(converged_ptr + problems, converged.to(tl.int8), mask=in_batch)


@triton.jit
def _cosine_cost(
    x_ptr,
    y_ptr,
    image,
    label,
    m,
    n,
    d,
    stride_xb,
    stride_xm,
    stride_yl,
    stride_yn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """``1 - x[image] y[label]^T`` ``(BLOCK_M, BLOCK_N)`` in fp32 (IEEE products), over D chunks."""
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    similarity = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, d, BLOCK_D):
        in_dims = start + dims < d
        x = tl.load(
            x_ptr + image * stride_xb + rows[:, None] * stride_xm + start + dims[None, :],
            mask=(rows < m)[:, None] & in_dims[None, :],
            other=0.0,
        ).to(tl.float32)
        y = tl.load(
            y_ptr + label * stride_yl + cols[:, None] * stride_yn + start + dims[None, :],
            mask=(cols < n)[:, None] & in_dims[None, :],
            other=0.0,
        ).to(tl.float32)
        similarity += tl.dot(x, tl.trans(y), input_precision="ieee")
    return 1.0 - similarity


@triton.jit
def _pairwise_kernel(
    x_ptr,
    y_ptr,
    row_mask_ptr,
    distance_ptr,
    f_ptr,
    g_ptr,
    converged_ptr,
    num_classes,
    m,
    n,
    d,
    stride_xb,
    stride_xm,
    stride_yl,
    stride_yn,
    inv_epsilon,
    epsilon,
    max_iter,
    threshold,
    cost_mean_over_epsilon,
    HAS_MASK: tl.constexpr,
    USE_TOL: tl.constexpr,
    UPDATE_RULE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    image = tl.program_id(0).to(tl.int64)
    label = tl.program_id(1).to(tl.int64)
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    in_rows, in_cols = rows < m, cols < n
    cost = _cosine_cost(
        x_ptr, y_ptr, image, label, m, n, d, stride_xb, stride_xm, stride_yl, stride_yn,
        BLOCK_M, BLOCK_N, BLOCK_D,
    )  # fmt: skip
    real_rows = in_rows
    if HAS_MASK:
        keep = tl.load(row_mask_ptr + image * m + rows, mask=in_rows, other=0)
        real_rows = in_rows & (keep != 0)
    tile = real_rows[:, None] & in_cols[None, :]
    neg_cost = tl.where(tile, -cost * inv_epsilon, float("-inf"))
    num_rows = tl.sum(real_rows.to(tl.float32), axis=0)
    # Uniform marginals over the real patches and the tokens (MMPL eq. 15).
    log_a = tl.where(real_rows, -tl.log(num_rows), float("-inf"))
    log_b = tl.where(in_cols, -tl.log(n.to(tl.float32)), float("-inf"))
    f, g, _, converged = _sinkhorn_loop(
        neg_cost[None, :, :],
        log_a[None, :],
        log_b[None, :],
        max_iter,
        threshold,
        cost_mean_over_epsilon,
        USE_TOL,
        UPDATE_RULE,
    )
    f = tl.reshape(f, (BLOCK_M,))
    g = tl.reshape(g, (BLOCK_N,))
    plan = tl.exp(neg_cost + f[:, None] + g[None, :])
    distance = tl.sum(tl.sum(tl.where(tile, plan * cost, 0.0), axis=1), axis=0)  # eq. 13
    pair = image * num_classes + label
    tl.store(distance_ptr + pair, distance)
    tl.store(f_ptr + pair * m + rows, f * epsilon, mask=in_rows)
    tl.store(g_ptr + pair * n + cols, g * epsilon, mask=in_cols)
    tl.store(converged_ptr + pair + tl.arange(0, 1), converged.to(tl.int8))


@triton.jit
def _solve_positive_definite(matrix, rhs, size, BLOCK: tl.constexpr):
    """Solve ``matrix @ z = rhs`` for a symmetric positive definite ``(BLOCK, BLOCK)`` tile.

    Gauss-Jordan elimination without pivoting over the leading ``size`` rows; the padding must
    be the identity with a zero right-hand side. Without pivoting it is stable for positive
    definite matrices, whose pivots are at least their smallest eigenvalue: the caller makes
    that eigenvalue at least the ridge of :mod:`reidkit.ot.implicit`.
    """
    index = tl.arange(0, BLOCK)
    for k in range(0, size):
        pivot_row = tl.sum(tl.where(index[:, None] == k, matrix, 0.0), axis=0)
        pivot_col = tl.sum(tl.where(index[None, :] == k, matrix, 0.0), axis=1)
        pivot = tl.sum(tl.where(index == k, pivot_row, 0.0), axis=0)
        rhs_k = tl.sum(tl.where(index == k, rhs, 0.0), axis=0)
        factor = tl.where(index == k, 0.0, pivot_col / pivot)
        matrix -= factor[:, None] * pivot_row[None, :]
        rhs -= factor * rhs_k
    diagonal = tl.sum(tl.where(index[:, None] == index[None, :], matrix, 0.0), axis=1)
    return rhs / diagonal


@triton.jit
def _pairwise_backward_kernel(
    x_ptr,
    y_ptr,
    f_ptr,
    g_ptr,
    grad_distance_ptr,
    grad_x_ptr,
    grad_y_ptr,
    num_classes,
    m,
    n,
    d,
    stride_xb,
    stride_xm,
    stride_yl,
    stride_yn,
    inv_epsilon,
    RIDGE_32: tl.constexpr,
    IMPLICIT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    image = tl.program_id(0).to(tl.int64)
    label = tl.program_id(1).to(tl.int64)
    pair = image * num_classes + label
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    in_rows, in_cols = rows < m, cols < n
    cost = _cosine_cost(
        x_ptr, y_ptr, image, label, m, n, d, stride_xb, stride_xm, stride_yl, stride_yn,
        BLOCK_M, BLOCK_N, BLOCK_D,
    )  # fmt: skip
    # Masked patches carry f = -inf from the forward, hence zero plan rows.
    f = tl.load(f_ptr + pair * m + rows, mask=in_rows, other=float("-inf"))
    g = tl.load(g_ptr + pair * n + cols, mask=in_cols, other=float("-inf"))
    plan = tl.exp((f[:, None] + g[None, :] - cost) * inv_epsilon)
    upstream = tl.load(grad_distance_ptr + pair)
    if IMPLICIT:
        # reidkit.ot.implicit.implicit_vjp with W = C: solve H [x; y] = [(C T) 1; (C T)^T 1]
        # through the regularised Laplacian on the token side (N x N), as solve_dual_system
        # does, then d distance / d C = T + T (x_i + y_j - C_ij) / epsilon.
        weights = plan * cost
        rhs_rows = tl.sum(weights, axis=1)
        rhs_cols = tl.sum(weights, axis=0)
        row_mass = tl.sum(plan, axis=1)
        # T_ij / (T 1)_i <= 1: no overflow, even for a row mass that underflowed to a subnormal;
        # rows without mass (padded, masked or underflowed) drop out of the system.
        row_mass = tl.where(row_mass > 0, row_mass, 1.0)
        scaled = plan / row_mass[:, None]
        gram = tl.dot(tl.trans(scaled), plan, input_precision="ieee").to(tl.float64)
        degree = tl.sum(gram, axis=1)
        real_cols = in_cols & (degree > 0)
        real = real_cols.to(tl.float64)
        ridge = RIDGE_32 * tl.sum(degree, axis=0) / tl.maximum(tl.sum(real, axis=0), 1.0)
        # Laplacian (its diagonal the sum of its weights) + ridge + rank-one gauge term on the
        # real columns, the identity on the others.
        diagonal = tl.where(real_cols, degree + ridge, 1.0)
        eye = cols[:, None] == cols[None, :]
        system = tl.where(eye, diagonal[None, :], 0.0) - gram + real[:, None] * real[None, :]
        reduced = rhs_cols - tl.sum(scaled * rhs_rows[:, None], axis=0)
        dual_cols = _solve_positive_definite(system, reduced.to(tl.float64), n, BLOCK_N).to(
            tl.float32
        )
        # 0 on rows without mass, whose right-hand side and plan row are 0.
        dual_rows = (rhs_rows - tl.sum(plan * dual_cols[None, :], axis=1)) / row_mass
        grad_cost = plan * (1.0 + (dual_rows[:, None] + dual_cols[None, :] - cost) * inv_epsilon)
    else:
        grad_cost = plan  # envelope: the plan is held constant
    grad_cost = tl.where(in_rows[:, None] & in_cols[None, :], grad_cost * upstream, 0.0)
    # C = 1 - x y^T: dL/dx[b] -= G y[l], dL/dy[l] -= G^T x[b], accumulated over all pairs.
    for start in range(0, d, BLOCK_D):
        in_dims = start + dims < d
        x_offsets = image * stride_xb + rows[:, None] * stride_xm + start + dims[None, :]
        y_offsets = label * stride_yl + cols[:, None] * stride_yn + start + dims[None, :]
        x_tile = in_rows[:, None] & in_dims[None, :]
        y_tile = in_cols[:, None] & in_dims[None, :]
        x = tl.load(x_ptr + x_offsets, mask=x_tile, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + y_offsets, mask=y_tile, other=0.0).to(tl.float32)
        grad_x = tl.dot(grad_cost, y, input_precision="ieee")
        grad_y = tl.dot(tl.trans(grad_cost), x, input_precision="ieee")
        tl.atomic_add(grad_x_ptr + x_offsets, -grad_x, mask=x_tile)
        tl.atomic_add(grad_y_ptr + y_offsets, -grad_y, mask=y_tile)


def _num_warps(tile: int) -> int:
    """Warps for a program holding ``tile`` fp32 entries: about 8 entries per thread."""
    return min(8, max(1, tile // 256))


def _stop_arguments(tol: float | None, stop_rule: str, epsilon: float) -> dict:
    """The stop-rule arguments of the forward kernels."""
    threshold = stop_threshold(tol, stop_rule)
    return {
        "threshold": 0.0 if threshold is None else threshold,
        "cost_mean_over_epsilon": UPDATE_RULE_COST_MEAN / epsilon,
        "USE_TOL": tol is not None,
        "UPDATE_RULE": stop_rule == "update",
    }


def sinkhorn_potentials(
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    epsilon: float,
    max_iter: int,
    tol: float | None,
    stop_rule: str,
) -> Potentials:
    """Potentials of a flat batch of problems in one launch, the cost read once.

    Small problems are packed several to a program (about 1024 cost entries per program), so
    that tiny tiles such as MMPL's 10 x 4 still fill the GPU's lanes. Each problem stops on its
    own, exactly as :func:`reidkit.ot.solvers.log_domain_potentials`.

    Args:
        cost: ``(B, M, N)`` finite costs with ``next_pow2(M) * next_pow2(N) <= 4096`` (e.g.
            ``M <= 128, N <= 32`` or ``M <= 8, N <= 512``), fp32, fp16 or bf16 (computed in fp32).
        a: ``(B, M)`` row marginals (zeros on masked rows).
        b: ``(B, N)`` column marginals (zeros on masked columns).
        epsilon, max_iter, tol, stop_rule: as in :func:`reidkit.sinkhorn`.

    Returns:
        :class:`reidkit.ot.solvers.Potentials`: ``f`` ``(B, M)`` and ``g`` ``(B, N)`` in float32
        (``-inf`` on zero-mass entries), ``n_iter`` ``(B,)`` int64 and ``converged`` ``(B,)``
        bool.
    """
    batch, m, n = cost.shape
    f = torch.empty(batch, m, device=cost.device, dtype=torch.float32)
    g = torch.empty(batch, n, device=cost.device, dtype=torch.float32)
    n_iter = torch.empty(batch, device=cost.device, dtype=torch.int32)
    converged = torch.empty(batch, device=cost.device, dtype=torch.int8)
    block_m, block_n = padded_block(m), padded_block(n)
    problems = min(_MAX_PROBLEMS, max(1, _PROGRAM_TILE // (block_m * block_n)))
    _sinkhorn_cost_kernel[(triton.cdiv(batch, problems),)](
        cost,
        a.float().contiguous(),
        b.float().contiguous(),
        f,
        g,
        n_iter,
        converged,
        batch,
        m,
        n,
        cost.stride(0),
        cost.stride(1),
        cost.stride(2),
        1.0 / epsilon,
        epsilon,
        max_iter,
        **_stop_arguments(tol, stop_rule, epsilon),
        PROBLEMS=problems,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        num_warps=_num_warps(problems * block_m * block_n),
    )
    return Potentials(f, g, n_iter.to(torch.int64), converged.bool())


def _pairwise_blocks(x: Tensor, y: Tensor) -> dict[str, int]:
    d = x.shape[2]
    return {
        "BLOCK_M": padded_block(x.shape[1], MIN_DOT_BLOCK),
        "BLOCK_N": padded_block(y.shape[1], MIN_DOT_BLOCK),
        "BLOCK_D": min(64, padded_block(d, MIN_DOT_BLOCK)),
        "num_warps": 4,
    }


def pairwise_potentials(
    x: Tensor,
    y: Tensor,
    x_mask: Tensor | None,
    epsilon: float,
    max_iter: int,
    tol: float | None,
    stop_rule: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MMPL distances and potentials from features, the cost built on chip per pair.

    Args:
        x: ``(B, M, D)`` L2-normalised patch features.
        y: ``(L, N, D)`` L2-normalised token features, with
            :func:`reidkit.kernels.triton_supports_pairwise` true.
        x_mask: ``(B, M)`` boolean, ``True`` on real patches, or ``None``.
        epsilon, max_iter, tol, stop_rule: as in :func:`reidkit.sinkhorn`.

    Returns:
        ``distance`` ``(B, L)``, ``f`` ``(B, L, M)`` and ``g`` ``(B, L, N)`` in float32 (``f`` is
        ``-inf`` on masked patches) and the convergence flags ``(B, L)``; the
        ``(B, L, M, N)`` cost and plan never leave the chip.
    """
    x, y = x.contiguous(), y.contiguous()
    batch, m, d = x.shape
    num_classes, n, _ = y.shape
    distance = torch.empty(batch, num_classes, device=x.device, dtype=torch.float32)
    f = torch.empty(batch, num_classes, m, device=x.device, dtype=torch.float32)
    g = torch.empty(batch, num_classes, n, device=x.device, dtype=torch.float32)
    converged = torch.empty(batch, num_classes, device=x.device, dtype=torch.int8)
    mask = x_mask.to(torch.int8).contiguous() if x_mask is not None else x
    _pairwise_kernel[(batch, num_classes)](
        x,
        y,
        mask,
        distance,
        f,
        g,
        converged,
        num_classes,
        m,
        n,
        d,
        x.stride(0),
        x.stride(1),
        y.stride(0),
        y.stride(1),
        1.0 / epsilon,
        epsilon,
        max_iter,
        **_stop_arguments(tol, stop_rule, epsilon),
        HAS_MASK=x_mask is not None,
        **_pairwise_blocks(x, y),
    )
    return distance, f, g, converged.bool()


def pairwise_feature_grads(
    x: Tensor,
    y: Tensor,
    f: Tensor,
    g: Tensor,
    grad_distance: Tensor,
    epsilon: float,
    grad: str,
) -> tuple[Tensor, Tensor]:
    """Gradients of ``sum(grad_distance * distance)`` to the features, from the potentials.

    Args:
        x: ``(B, M, D)`` patch features of the forward.
        y: ``(L, N, D)`` token features of the forward.
        f: ``(B, L, M)`` row potentials from :func:`pairwise_potentials` (``-inf`` on masked
            patches).
        g: ``(B, L, N)`` column potentials.
        grad_distance: ``(B, L)`` upstream gradient.
        epsilon: entropic regularisation of the forward.
        grad: ``"implicit"`` (exact gradient of ``<T*, C>``; one regularised ``N x N`` solve per
            pair, in float64 on chip, as :func:`reidkit.ot.implicit.solve_dual_system`) or
            ``"envelope"`` (``d distance / d C = T*``).

    Returns:
        ``grad_x`` ``(B, M, D)`` and ``grad_y`` ``(L, N, D)`` in float32.
    """
    x, y = x.contiguous(), y.contiguous()
    grad_x = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
    grad_y = torch.zeros(y.shape, device=y.device, dtype=torch.float32)
    batch, m, d = x.shape
    num_classes, n, _ = y.shape
    _pairwise_backward_kernel[(batch, num_classes)](
        x,
        y,
        f.contiguous(),
        g.contiguous(),
        grad_distance.float().contiguous(),
        grad_x,
        grad_y,
        num_classes,
        m,
        n,
        d,
        x.stride(0),
        x.stride(1),
        y.stride(0),
        y.stride(1),
        1.0 / epsilon,
        RIDGE_32=RIDGE[torch.float32],
        IMPLICIT=grad == "implicit",
        **_pairwise_blocks(x, y),
    )
    return grad_x, grad_y


class PairwiseOTDistance(torch.autograd.Function):
    """``(B, L)`` OT distances from features; forward and backward are fused kernels.

    The forward returns the distances and the (non-differentiable) convergence flags
    ``(B, L)``, and saves only ``x``, ``y`` and the potentials ``f`` ``(B, L, M)``, ``g``
    ``(B, L, N)``; the backward recomputes cost and plan on chip from them.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        y: Tensor,
        x_mask: Tensor | None,
        epsilon: float,
        max_iter: int,
        tol: float | None,
        stop_rule: str,
        grad: str,
    ) -> tuple[Tensor, Tensor]:
        distance, f, g, converged = pairwise_potentials(
            x, y, x_mask, epsilon, max_iter, tol, stop_rule
        )
        ctx.save_for_backward(x, y, f, g)
        ctx.epsilon, ctx.grad = epsilon, grad
        ctx.mark_non_differentiable(converged)
        return distance.to(x.dtype), converged

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_distance: Tensor, _: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x, y, f, g = ctx.saved_tensors
        grad_x, grad_y = pairwise_feature_grads(x, y, f, g, grad_distance, ctx.epsilon, ctx.grad)
        needs = ctx.needs_input_grad
        return (
            grad_x.to(x.dtype) if needs[0] else None,
            grad_y.to(y.dtype) if needs[1] else None,
            *(None,) * 6,
        )
