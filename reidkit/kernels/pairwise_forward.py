"""The feature-level forward kernel: MMPL distances from features, the cost built on chip.

The program of the pair ``(b, l)`` builds the cost ``1 - x[b] y[l]^T`` with ``tl.dot``
(:func:`cosine_cost`, shared with :mod:`reidkit.kernels.pairwise_backward`), runs
:func:`reidkit.kernels.sinkhorn_loop.sinkhorn_loop` with uniform marginals (MMPL eq. 15) and
writes the distance (eq. 13) and the potentials; the ``(B, L, M, N)`` cost and plan never
leave the chip. Its plain-torch reference is the torch path of
:func:`reidkit.pairwise_ot_distance` (:func:`reidkit.ot.solvers.log_domain_potentials` on the
explicit costs). Importing this module imports Triton.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import triton
import triton.language as tl
from torch import Tensor

from reidkit.kernels import launch
from reidkit.kernels.sinkhorn_loop import sinkhorn_loop, stop_arguments

_INTEGERS = ("num_classes", "m", "n", "d", "max_iter", "stop_rule")


@triton.jit
def cosine_cost(
    x_ptr,
    y_ptr,
    image,
    label,
    m,
    n,
    d,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """``1 - x[image] y[label]^T`` ``(BLOCK_M, BLOCK_N)`` in fp32 (IEEE products), over D chunks.

    ``x`` ``(B, M, d)`` and ``y`` ``(L, N, d)`` are contiguous, ``d`` a multiple of
    :data:`reidkit.kernels.launch.FEATURE_ALIGNMENT`.
    """
    d = tl.multiple_of(d, 16)
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    x_rows = x_ptr + (image * m + rows[:, None]) * d
    y_rows = y_ptr + (label * n + cols[:, None]) * d
    similarity = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, d, BLOCK_D):
        in_dims = start + dims < d
        x = tl.load(
            x_rows + start + dims[None, :], mask=(rows < m)[:, None] & in_dims[None, :], other=0.0
        ).to(tl.float32)
        y = tl.load(
            y_rows + start + dims[None, :], mask=(cols < n)[:, None] & in_dims[None, :], other=0.0
        ).to(tl.float32)
        similarity += tl.dot(x, tl.trans(y), input_precision="ieee")
    return 1.0 - similarity


@triton.jit(do_not_specialize=_INTEGERS)
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
    max_iter,
    stop_rule,
    inv_epsilon,
    epsilon,
    threshold,
    cost_mean_over_epsilon,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    image = tl.program_id(0).to(tl.int64)
    label = tl.program_id(1).to(tl.int64)
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    # Uniform marginals over the real patches and the tokens (MMPL eq. 15), -inf elsewhere;
    # computed first, so that only they carry the masks past the loop over D.
    keep = tl.load(row_mask_ptr + image * m + rows, mask=rows < m, other=0)
    real_rows = keep != 0
    num_rows = tl.sum(real_rows.to(tl.float32), axis=0)
    log_a = tl.where(real_rows, -tl.log(num_rows), float("-inf"))
    log_b = tl.where(cols < n, -tl.log(n.to(tl.float32)), float("-inf"))
    cost = cosine_cost(x_ptr, y_ptr, image, label, m, n, d, BLOCK_M, BLOCK_N, BLOCK_D)
    tile = (log_a > float("-inf"))[:, None] & (log_b > float("-inf"))[None, :]
    neg_cost = tl.where(tile, -cost * inv_epsilon, float("-inf"))
    f, g, _, converged = sinkhorn_loop(
        neg_cost[None, :, :],
        log_a[None, :],
        log_b[None, :],
        max_iter,
        stop_rule,
        threshold,
        cost_mean_over_epsilon,
    )
    f = tl.reshape(f, (BLOCK_M,))
    g = tl.reshape(g, (BLOCK_N,))
    plan = tl.exp(neg_cost + f[:, None] + g[None, :])
    # eq. 13 from -C / epsilon, which the loop kept (-inf where the plan is 0: masked, padded).
    weighted = plan * tl.where(plan > 0, neg_cost, 0.0)
    distance = -epsilon * tl.sum(tl.sum(weighted, axis=1), axis=0)
    # The potentials are padded to whole blocks: stores need no mask, so no mask stays alive
    # across the loop.
    pair = image * num_classes + label
    tl.store(distance_ptr + pair, distance)
    tl.store(f_ptr + pair * BLOCK_M + rows, f * epsilon)
    tl.store(g_ptr + pair * BLOCK_N + cols, g * epsilon)
    tl.store(converged_ptr + pair + tl.arange(0, 1), converged.to(tl.int8))


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
        y: ``(L, N, D)`` L2-normalised token features of the dtype of ``x``, with
            :func:`reidkit.kernels.triton_supports_pairwise` true.
        x_mask: ``(B, M)`` boolean, ``True`` on real patches, or ``None``.
        epsilon, max_iter, tol, stop_rule: as in :func:`reidkit.sinkhorn`.

    Returns:
        ``distance`` ``(B, L)``, ``f`` ``(B, L, M)`` and ``g`` ``(B, L, N)`` in float32 (``f`` is
        ``-inf`` on masked patches) and the convergence flags ``(B, L)``; the
        ``(B, L, M, N)`` cost and plan never leave the chip.
    """
    batch, m, _ = x.shape
    num_classes, n, _ = y.shape
    setting = launch.pairwise_launch(m, n)
    distance = torch.empty(batch, num_classes, device=x.device, dtype=torch.float32)
    f = torch.empty(batch, num_classes, setting.block_m, device=x.device, dtype=torch.float32)
    g = torch.empty(batch, num_classes, setting.block_n, device=x.device, dtype=torch.float32)
    converged = torch.empty(batch, num_classes, device=x.device, dtype=torch.int8)
    if x_mask is None:
        row_mask = torch.ones(batch, m, device=x.device, dtype=torch.int8)
    else:
        row_mask = launch.aligned(x_mask.to(torch.int8))
    x, y = launch.padded_features(x), launch.padded_features(y)
    _pairwise_kernel[(batch, num_classes)](
        x,
        y,
        row_mask,
        distance,
        f,
        g,
        converged,
        num_classes,
        m,
        n,
        x.shape[2],
        min(max_iter, launch.MAX_INT32),
        inv_epsilon=1.0 / epsilon,
        epsilon=epsilon,
        **stop_arguments(tol, stop_rule, epsilon),
        **setting.constexprs(),
        num_warps=setting.num_warps,
        num_stages=setting.num_stages,
    )
    return distance, f[..., :m].contiguous(), g[..., :n].contiguous(), converged.bool()


def compile_variants() -> Iterator[launch.KernelVariant]:
    """Every variant of the kernel that :func:`pairwise_potentials` can launch: each setting of
    :func:`reidkit.kernels.launch.pairwise_launches` for each feature dtype (every stop rule
    runs in one variant: the stop rule is a runtime argument)."""
    for dtype in launch.KERNEL_DTYPES:
        features = f"*{launch.TRITON_TYPES[dtype]}"
        signature = {"x_ptr": features, "y_ptr": features, "row_mask_ptr": "*i8"}
        signature |= {name: "*fp32" for name in ("distance_ptr", "f_ptr", "g_ptr")}
        signature["converged_ptr"] = "*i8"
        signature |= dict.fromkeys(_INTEGERS, "i32")
        signature |= dict.fromkeys(("inv_epsilon", "epsilon", "threshold"), "fp32")
        signature["cost_mean_over_epsilon"] = "fp32"
        for setting in launch.pairwise_launches():
            yield launch.KernelVariant(
                _pairwise_kernel,
                "pairwise_forward",
                setting,
                launch.TRITON_TYPES[dtype],
                signature,
                setting.constexprs(),
            )
