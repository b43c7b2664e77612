"""Triton kernels: the whole log-domain Sinkhorn loop of one problem per program.

Each program loads its cost tile once (or builds it on chip from two feature matrices), keeps
it in registers across all iterations, and writes only the potentials ``f``, ``g``, the
iteration count and, for the feature-level entry, the distance. The backward pass needs no
stored iterate: :mod:`reidkit.ot.implicit` differentiates from the potentials.

The iteration and the stopping rules are those of :mod:`reidkit.ot.solvers` (MMPL eq. 17 in
log form, potentials in units of epsilon inside the loop): one iteration is a row update
followed by a column update; a problem stops before applying the row update whose residual is
``<= tol``. Importing this module imports Triton; :mod:`reidkit.kernels` does so lazily.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

_MIN_DOT = 16  # tl.dot needs every block dimension >= 16


@triton.jit
def _logsumexp(values, axis: tl.constexpr):
    """Stable log-sum-exp along ``axis``; ``-inf`` where every entry is ``-inf``."""
    peak = tl.max(values, axis=axis)
    peak = tl.where(peak == float("-inf"), 0.0, peak)
    if axis == 1:
        total = tl.sum(tl.exp(values - peak[:, None]), axis=1)
    else:
        total = tl.sum(tl.exp(values - peak[None, :]), axis=0)
    return peak + tl.log(total)


@triton.jit
def _sinkhorn_loop(
    neg_cost,  # (BLOCK_M, BLOCK_N) -C / epsilon, -inf outside the problem
    log_a,  # (BLOCK_M,) -inf on zero-mass or padded rows
    log_b,  # (BLOCK_N,)
    max_iter,
    tol,
    USE_TOL: tl.constexpr,
    UPDATE_RULE: tl.constexpr,
):
    """Log-domain Sinkhorn on a tile: scaled potentials ``f / eps``, ``g / eps`` and count."""
    row_valid = log_a > float("-inf")
    col_valid = log_b > float("-inf")
    a = tl.exp(log_a)
    num_rows = tl.sum(row_valid.to(tl.float32), axis=0)
    finite_log_a = tl.where(row_valid, log_a, 0.0)  # no -inf - -inf on padded entries
    finite_log_b = tl.where(col_valid, log_b, 0.0)
    f = tl.zeros_like(log_a)
    g = tl.where(col_valid, 0.0, float("-inf"))
    n_iter = 0
    iteration = 0
    running = max_iter > 0
    while running:
        new_f = tl.where(
            row_valid, finite_log_a - _logsumexp(neg_cost + g[None, :], axis=1), float("-inf")
        )
        stop = False
        if USE_TOL:
            if UPDATE_RULE:
                change = tl.abs(tl.exp(new_f) - tl.exp(f))
                residual = tl.sum(tl.where(row_valid, change, 0.0), axis=0) / num_rows
            else:
                # Row sums of the current plan are a * exp(f - new_f).
                change = tl.where(row_valid, f, 0.0) - tl.where(row_valid, new_f, 0.0)
                error = a * tl.abs(tl.exp(change) - 1.0)
                residual = tl.sum(tl.where(row_valid, error, 0.0), axis=0)
            stop = (iteration > 0) & (residual <= tol)
        f = tl.where(stop, f, new_f)
        new_g = tl.where(
            col_valid, finite_log_b - _logsumexp(neg_cost + f[:, None], axis=0), float("-inf")
        )
        g = tl.where(stop, g, new_g)
        n_iter += tl.where(stop, 0, 1)
        iteration += 1
        running = (iteration < max_iter) & (not stop)
    return f, g, n_iter


@triton.jit
def _sinkhorn_cost_kernel(
    cost_ptr,
    a_ptr,
    b_ptr,
    f_ptr,
    g_ptr,
    n_iter_ptr,
    m,
    n,
    stride_cb,
    stride_cm,
    stride_cn,
    inv_epsilon,
    epsilon,
    max_iter,
    tol,
    USE_TOL: tl.constexpr,
    UPDATE_RULE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    problem = tl.program_id(0)
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    in_rows, in_cols = rows < m, cols < n
    tile = in_rows[:, None] & in_cols[None, :]
    offsets = problem * stride_cb + rows[:, None] * stride_cm + cols[None, :] * stride_cn
    cost = tl.load(cost_ptr + offsets, mask=tile, other=0.0).to(tl.float32)
    neg_cost = tl.where(tile, -cost * inv_epsilon, float("-inf"))
    a = tl.load(a_ptr + problem * m + rows, mask=in_rows, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + problem * n + cols, mask=in_cols, other=0.0).to(tl.float32)
    f, g, n_iter = _sinkhorn_loop(
        neg_cost, tl.log(a), tl.log(b), max_iter, tol, USE_TOL, UPDATE_RULE
    )
    tl.store(f_ptr + problem * m + rows, f * epsilon, mask=in_rows)
    tl.store(g_ptr + problem * n + cols, g * epsilon, mask=in_cols)
    tl.store(n_iter_ptr + problem, n_iter)


@triton.jit
def _pairwise_kernel(
    x_ptr,
    y_ptr,
    row_mask_ptr,
    distance_ptr,
    f_ptr,
    g_ptr,
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
    tol,
    HAS_MASK: tl.constexpr,
    USE_TOL: tl.constexpr,
    UPDATE_RULE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    image = tl.program_id(0)
    label = tl.program_id(1)
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    in_rows, in_cols = rows < m, cols < n
    # Cosine similarities x[image] y[label]^T, accumulated over feature chunks on chip.
    similarity = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, d, BLOCK_D):
        in_dims = start + dims < d
        x = tl.load(
            x_ptr + image * stride_xb + rows[:, None] * stride_xm + start + dims[None, :],
            mask=in_rows[:, None] & in_dims[None, :],
            other=0.0,
        ).to(tl.float32)
        y = tl.load(
            y_ptr + label * stride_yl + cols[:, None] * stride_yn + start + dims[None, :],
            mask=in_cols[:, None] & in_dims[None, :],
            other=0.0,
        ).to(tl.float32)
        similarity += tl.dot(x, tl.trans(y), input_precision="ieee")
    cost = 1.0 - similarity
    real_rows = in_rows
    if HAS_MASK:
        keep = tl.load(row_mask_ptr + image * m + rows, mask=in_rows, other=0)
        real_rows = in_rows & (keep != 0)
    tile = real_rows[:, None] & in_cols[None, :]
    neg_cost = tl.where(tile, -cost * inv_epsilon, float("-inf"))
    num_rows = tl.sum(real_rows.to(tl.float32), axis=0)
    log_a = tl.where(real_rows, -tl.log(num_rows), float("-inf"))
    log_b = tl.where(in_cols, -tl.log(n.to(tl.float32)), float("-inf"))
    f, g, _ = _sinkhorn_loop(neg_cost, log_a, log_b, max_iter, tol, USE_TOL, UPDATE_RULE)
    plan = tl.exp(neg_cost + f[:, None] + g[None, :])
    distance = tl.sum(tl.sum(tl.where(tile, plan * cost, 0.0), axis=1), axis=0)
    pair = image * num_classes + label
    tl.store(distance_ptr + pair, distance)
    tl.store(f_ptr + pair * m + rows, f * epsilon, mask=in_rows)
    tl.store(g_ptr + pair * n + cols, g * epsilon, mask=in_cols)


def _block(size: int, minimum: int = 1) -> int:
    return max(minimum, triton.next_power_of_2(size))


def _stop_flags(tol: float | None, stop_rule: str) -> tuple[float, bool, bool]:
    return (0.0 if tol is None else float(tol)), tol is not None, stop_rule == "update"


def sinkhorn_potentials(
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    epsilon: float,
    max_iter: int,
    tol: float | None,
    stop_rule: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """Potentials of a flat batch of problems, one program per problem.

    Args:
        cost: ``(B, M, N)`` with ``M <= 128`` and ``N <= 32``, fp32, fp16 or bf16.
        a: ``(B, M)`` row marginals (zeros on masked rows).
        b: ``(B, N)`` column marginals (zeros on masked columns).
        epsilon, max_iter, tol, stop_rule: as in :func:`reidkit.sinkhorn`.

    Returns:
        ``f`` ``(B, M)`` and ``g`` ``(B, N)`` in float32 (``-inf`` on zero-mass entries) and
        ``n_iter`` ``(B,)`` int64.
    """
    batch, m, n = cost.shape
    f = torch.empty(batch, m, device=cost.device, dtype=torch.float32)
    g = torch.empty(batch, n, device=cost.device, dtype=torch.float32)
    n_iter = torch.empty(batch, device=cost.device, dtype=torch.int32)
    tol_value, use_tol, update_rule = _stop_flags(tol, stop_rule)
    _sinkhorn_cost_kernel[(batch,)](
        cost,
        a.float().contiguous(),
        b.float().contiguous(),
        f,
        g,
        n_iter,
        m,
        n,
        cost.stride(0),
        cost.stride(1),
        cost.stride(2),
        1.0 / epsilon,
        epsilon,
        max_iter,
        tol_value,
        USE_TOL=use_tol,
        UPDATE_RULE=update_rule,
        BLOCK_M=_block(m),
        BLOCK_N=_block(n),
    )
    return f, g, n_iter.to(torch.int64)


def pairwise_potentials(
    x: Tensor,
    y: Tensor,
    x_mask: Tensor | None,
    epsilon: float,
    max_iter: int,
    tol: float | None,
    stop_rule: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """MMPL distances and potentials from features, the cost built on chip per pair.

    Args:
        x: ``(B, M, D)`` L2-normalised patch features, ``M <= 128``.
        y: ``(L, N, D)`` L2-normalised token features, ``N <= 32``.
        x_mask: ``(B, M)`` boolean, ``True`` on real patches, or ``None``.
        epsilon, max_iter, tol, stop_rule: as in :func:`reidkit.sinkhorn`.

    Returns:
        ``distance`` ``(B, L)``, ``f`` ``(B, L, M)`` and ``g`` ``(B, L, N)`` in float32; the
        ``(B, L, M, N)`` cost and plan never leave the chip.
    """
    x, y = x.contiguous(), y.contiguous()
    batch, m, d = x.shape
    num_classes, n, _ = y.shape
    distance = torch.empty(batch, num_classes, device=x.device, dtype=torch.float32)
    f = torch.empty(batch, num_classes, m, device=x.device, dtype=torch.float32)
    g = torch.empty(batch, num_classes, n, device=x.device, dtype=torch.float32)
    mask = x_mask.to(torch.int8).contiguous() if x_mask is not None else x
    tol_value, use_tol, update_rule = _stop_flags(tol, stop_rule)
    _pairwise_kernel[(batch, num_classes)](
        x,
        y,
        mask,
        distance,
        f,
        g,
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
        tol_value,
        HAS_MASK=x_mask is not None,
        USE_TOL=use_tol,
        UPDATE_RULE=update_rule,
        BLOCK_M=_block(m, _MIN_DOT),
        BLOCK_N=_block(n, _MIN_DOT),
        BLOCK_D=min(64, _block(d, _MIN_DOT)),
    )
    return distance, f, g
