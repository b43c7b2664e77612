"""The cost-tile Sinkhorn kernel: a flat batch of cost matrices, the whole loop on chip.

Each program loads the tiles of :attr:`~reidkit.kernels.launch.CostTileLaunch.problems` cost
matrices once, keeps them in registers across all iterations of
:func:`reidkit.kernels.sinkhorn_loop.sinkhorn_loop` and writes only the potentials ``f``,
``g``, the iteration counts and the convergence flags. :func:`reidkit.sinkhorn` calls
:func:`sinkhorn_potentials` on CUDA tensors; its plain-torch reference is
:func:`reidkit.ot.solvers.log_domain_potentials`. Importing this module imports Triton.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import triton
import triton.language as tl
from torch import Tensor

from reidkit.kernels import launch
from reidkit.kernels.sinkhorn_loop import sinkhorn_loop, stop_arguments
from reidkit.ot.solvers import Potentials

_INTEGERS = ("batch", "m", "n", "max_iter", "stop_rule")


@triton.jit(do_not_specialize=_INTEGERS)
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
    max_iter,
    stop_rule,
    inv_epsilon,
    epsilon,
    threshold,
    cost_mean_over_epsilon,
    PROBLEMS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # A 64-bit scalar base and 32-bit offsets within the program (at most 16 x 4096 entries).
    first = tl.program_id(0).to(tl.int64) * PROBLEMS
    problems = tl.arange(0, PROBLEMS)
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    in_batch = problems < batch - first
    in_rows = in_batch[:, None] & (rows[None, :] < m)  # (P, BLOCK_M)
    in_cols = in_batch[:, None] & (cols[None, :] < n)  # (P, BLOCK_N)
    tile = in_rows[:, :, None] & in_cols[:, None, :]
    offsets = problems[:, None, None] * (m * n) + rows[None, :, None] * n + cols[None, None, :]
    cost = tl.load(cost_ptr + first * m * n + offsets, mask=tile, other=0.0)
    neg_cost = tl.where(tile, -cost * inv_epsilon, float("-inf"))
    row_offsets = problems[:, None] * m + rows[None, :]
    col_offsets = problems[:, None] * n + cols[None, :]
    a = tl.load(a_ptr + first * m + row_offsets, mask=in_rows, other=0.0)
    b = tl.load(b_ptr + first * n + col_offsets, mask=in_cols, other=0.0)
    f, g, n_iter, converged = sinkhorn_loop(
        neg_cost, tl.log(a), tl.log(b), max_iter, stop_rule, threshold, cost_mean_over_epsilon
    )
    # The outputs are padded to whole programs and blocks: stores need no mask, so no mask
    # stays alive across the loop.
    block_rows = (first + problems[:, None]) * BLOCK_M + rows[None, :]
    block_cols = (first + problems[:, None]) * BLOCK_N + cols[None, :]
    tl.store(f_ptr + block_rows, f * epsilon)
    tl.store(g_ptr + block_cols, g * epsilon)
    tl.store(n_iter_ptr + first + problems, n_iter)
    tl.store(converged_ptr + first + problems, converged.to(tl.int8))


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

    Small problems are packed several to a program
    (:func:`reidkit.kernels.launch.cost_tile_launch`), so that tiny tiles such as MMPL's 10 x 4
    still fill the GPU's lanes. Each problem stops on its own, exactly as
    :func:`reidkit.ot.solvers.log_domain_potentials`.

    Args:
        cost: ``(B, M, N)`` finite costs with ``launch.cost_tile_fits(M, N)`` (each side padded
            to a power of two of at least 4, at most 4096 entries: e.g. ``M <= 128, N <= 32``
            or ``M <= 8, N <= 512``), computed in float32 (:func:`reidkit.sinkhorn` passes its
            float32 working copy; another float dtype is converted first).
        a: ``(B, M)`` row marginals (zeros on masked rows).
        b: ``(B, N)`` column marginals (zeros on masked columns).
        epsilon, max_iter, tol, stop_rule: as in :func:`reidkit.sinkhorn`.

    Returns:
        :class:`reidkit.ot.solvers.Potentials`: ``f`` ``(B, M)`` and ``g`` ``(B, N)`` in float32
        (``-inf`` on zero-mass entries), ``n_iter`` ``(B,)`` int64 and ``converged`` ``(B,)``
        bool.
    """
    batch, m, n = cost.shape
    setting = launch.cost_tile_launch(m, n)
    programs = triton.cdiv(batch, setting.problems)
    padded = programs * setting.problems
    f = torch.empty(padded, setting.block_m, device=cost.device, dtype=torch.float32)
    g = torch.empty(padded, setting.block_n, device=cost.device, dtype=torch.float32)
    n_iter = torch.empty(padded, device=cost.device, dtype=torch.int32)
    converged = torch.empty(padded, device=cost.device, dtype=torch.int8)
    _sinkhorn_cost_kernel[(programs,)](
        launch.aligned(cost.float()),
        launch.aligned(a.float()),
        launch.aligned(b.float()),
        f,
        g,
        n_iter,
        converged,
        batch,
        m,
        n,
        min(max_iter, launch.MAX_INT32),
        inv_epsilon=1.0 / epsilon,
        epsilon=epsilon,
        **stop_arguments(tol, stop_rule, epsilon),
        **setting.constexprs(),
        num_warps=setting.num_warps,
        num_stages=setting.num_stages,
    )
    return Potentials(
        f[:batch, :m].contiguous(),
        g[:batch, :n].contiguous(),
        n_iter[:batch].to(torch.int64),
        converged[:batch].bool(),
    )


def compile_variants() -> Iterator[launch.KernelVariant]:
    """Every variant of the kernel that :func:`sinkhorn_potentials` can launch."""
    pointers = ("cost", "a", "b", "f", "g")
    signature = {f"{name}_ptr": "*fp32" for name in pointers}
    signature |= {"n_iter_ptr": "*i32", "converged_ptr": "*i8"}
    signature |= dict.fromkeys(_INTEGERS, "i32")
    signature |= dict.fromkeys(("inv_epsilon", "epsilon", "threshold"), "fp32")
    signature["cost_mean_over_epsilon"] = "fp32"
    for setting in launch.cost_tile_launches():
        yield launch.KernelVariant(
            _sinkhorn_cost_kernel, "cost_tile", setting, "fp32", signature, setting.constexprs()
        )
