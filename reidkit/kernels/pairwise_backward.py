"""The feature-level backward: per-pair cost gradients on chip, feature gradients by two GEMMs.

The program of the pair ``(b, l)`` rebuilds the cost and the plan from the saved potentials,
forms ``G = d distance / d C`` (envelope, or implicit with the per-problem regularised linear
solve done on chip in float64) and writes ``-G`` times the upstream gradient, the gradient of
the similarity ``S = x[b] y[l]^T = 1 - C``, into a ``(B M, L N)`` float32 matrix
(:func:`similarity_gradients`). With that matrix the feature gradients are two matrix
products (:func:`pairwise_feature_grads`)::

    dL/dx  (B M, D) = dL/dS @ y  (L N, D),        dL/dy  (L N, D) = dL/dS^T @ x  (B M, D),

run by the BLAS of torch (tensor cores where torch's float32 matmul precision allows them),
over chunks of classes of at most :data:`reidkit.kernels.launch.GRADIENT_CHUNK_ENTRIES`
entries. ``docs/components/kernels.md`` compares this design with accumulating both gradients
by atomic adds from every pair. The plain-torch reference is the torch path of
:func:`reidkit.pairwise_ot_distance` (:func:`reidkit.ot.implicit.implicit_vjp` per chunk).
Importing this module imports Triton.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import triton
import triton.language as tl
from torch import Tensor

from reidkit.kernels import launch
from reidkit.kernels.pairwise_forward import cosine_cost
from reidkit.ot.implicit import RIDGE

_INTEGERS = ("num_classes", "class_start", "chunk_classes", "m", "n", "d")
GRAD_MODES = ("implicit", "envelope")


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
def _implicit_cost_gradient(plan, cost, in_cols, n, inv_epsilon, RIDGE_32, BLOCK_N):
    """``d <T, C> / d C`` for the plan ``T`` returned, as :func:`reidkit.ot.implicit.implicit_vjp`.

    Solves ``H [x; y] = [(C T) 1; (C T)^T 1]`` through the regularised Laplacian on the token
    side (N x N), as :func:`reidkit.ot.implicit.solve_dual_system` does, then
    ``d distance / d C = T + T (x_i + y_j - C_ij) / epsilon``.
    """
    cols = tl.arange(0, BLOCK_N)
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
    dual_cols = _solve_positive_definite(system, reduced.to(tl.float64), n, BLOCK_N)
    dual_cols = dual_cols.to(tl.float32)
    # 0 on rows without mass, whose right-hand side and plan row are 0.
    dual_rows = (rhs_rows - tl.sum(plan * dual_cols[None, :], axis=1)) / row_mass
    return plan * (1.0 + (dual_rows[:, None] + dual_cols[None, :] - cost) * inv_epsilon)


@triton.jit(do_not_specialize=_INTEGERS)
def _similarity_gradient_kernel(
    x_ptr,
    y_ptr,
    f_ptr,
    g_ptr,
    grad_distance_ptr,
    out_ptr,
    num_classes,
    class_start,
    chunk_classes,
    m,
    n,
    d,
    inv_epsilon,
    RIDGE_32: tl.constexpr,
    IMPLICIT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    image = tl.program_id(0).to(tl.int64)
    column_block = tl.program_id(1).to(tl.int64)  # the class within the chunk
    label = class_start + column_block
    pair = image * num_classes + label
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    in_rows, in_cols = rows < m, cols < n
    cost = cosine_cost(x_ptr, y_ptr, image, label, m, n, d, BLOCK_M, BLOCK_N, BLOCK_D)
    # Masked patches carry f = -inf from the forward, hence zero plan rows.
    f = tl.load(f_ptr + pair * m + rows, mask=in_rows, other=float("-inf"))
    g = tl.load(g_ptr + pair * n + cols, mask=in_cols, other=float("-inf"))
    plan = tl.exp((f[:, None] + g[None, :] - cost) * inv_epsilon)
    if IMPLICIT:
        grad_cost = _implicit_cost_gradient(plan, cost, in_cols, n, inv_epsilon, RIDGE_32, BLOCK_N)
    else:
        grad_cost = plan  # envelope: the plan is held constant
    upstream = tl.load(grad_distance_ptr + pair)
    tile = in_rows[:, None] & in_cols[None, :]
    # Row b M + i, column (l - class_start) N + j of the (B M, chunk_classes N) matrix.
    offsets = (image * m + rows[:, None]) * (chunk_classes * n) + column_block * n + cols[None, :]
    tl.store(out_ptr + offsets, -grad_cost * upstream, mask=tile)


def similarity_gradients(
    x: Tensor,
    y: Tensor,
    f: Tensor,
    g: Tensor,
    grad_distance: Tensor,
    epsilon: float,
    grad: str,
    classes: slice,
) -> Tensor:
    """``dL/dS`` for the classes ``classes`` as a ``(B M, L_chunk N)`` float32 matrix.

    ``S = x[b] y[l]^T`` is the similarity (the cost is ``1 - S``) and ``L`` is
    ``sum(grad_distance * distance)``: entry ``(b M + i, (l - classes.start) N + j)`` is
    ``-grad_distance[b, l] * d distance[b, l] / d C[b, l, i, j]``.

    Args:
        x: ``(B, M, D)`` patch features of the forward, as the kernels read them
            (:func:`reidkit.kernels.launch.padded_features`).
        y: ``(L, N, D)`` token features of the forward, likewise.
        f: ``(B, L, M)`` row potentials of the forward (``-inf`` on masked patches).
        g: ``(B, L, N)`` column potentials.
        grad_distance: ``(B, L)`` upstream gradient.
        epsilon: entropic regularisation of the forward.
        grad: ``"implicit"`` or ``"envelope"``, as in :func:`pairwise_feature_grads`.
        classes: the chunk of classes, ``slice(start, stop)``.
    """
    batch, m, d = x.shape
    num_classes, n, _ = y.shape
    chunk_classes = classes.stop - classes.start
    out = torch.empty(batch * m, chunk_classes * n, device=x.device, dtype=torch.float32)
    setting = launch.pairwise_launch(m, n, backward=True)
    _similarity_gradient_kernel[(batch, chunk_classes)](
        x,
        y,
        f,
        g,
        grad_distance,
        out,
        num_classes,
        classes.start,
        chunk_classes,
        m,
        n,
        d,
        1.0 / epsilon,
        RIDGE_32=RIDGE[torch.float32],
        IMPLICIT=grad == "implicit",
        **setting.constexprs(),
        num_warps=setting.num_warps,
        num_stages=setting.num_stages,
    )
    return out


def pairwise_feature_grads(
    x: Tensor,
    y: Tensor,
    f: Tensor,
    g: Tensor,
    grad_distance: Tensor,
    epsilon: float,
    grad: str,
    needs: tuple[bool, bool] = (True, True),
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of ``sum(grad_distance * distance)`` to the features, from the potentials.

    Args:
        x: ``(B, M, D)`` patch features of the forward.
        y: ``(L, N, D)`` token features of the forward.
        f: ``(B, L, M)`` row potentials from
            :func:`reidkit.kernels.pairwise_forward.pairwise_potentials` (``-inf`` on masked
            patches).
        g: ``(B, L, N)`` column potentials.
        grad_distance: ``(B, L)`` upstream gradient.
        epsilon: entropic regularisation of the forward.
        grad: ``"implicit"`` (exact gradient of ``<T*, C>``; one regularised ``N x N`` solve per
            pair, in float64 on chip, as :func:`reidkit.ot.implicit.solve_dual_system`) or
            ``"envelope"`` (``d distance / d C = T*``).
        needs: whether ``grad_x`` and ``grad_y`` are wanted.

    Returns:
        ``grad_x`` ``(B, M, D)`` and ``grad_y`` ``(L, N, D)`` in float32 (``None`` where not
        needed).
    """
    batch, m, d = x.shape
    num_classes, n, _ = y.shape
    x_kernel, y_kernel = launch.padded_features(x), launch.padded_features(y)
    f, g = launch.aligned(f), launch.aligned(g)
    grad_distance = launch.aligned(grad_distance.float())
    x_rows = x.reshape(batch * m, d).float()
    y_rows = y.reshape(num_classes * n, d).float()
    grad_x = torch.zeros_like(x_rows) if needs[0] else None
    grad_y = torch.empty_like(y_rows) if needs[1] else None
    chunk = max(1, launch.GRADIENT_CHUNK_ENTRIES // (batch * m * n))
    for start in range(0, num_classes, chunk):
        classes = slice(start, min(start + chunk, num_classes))
        grad_similarity = similarity_gradients(
            x_kernel, y_kernel, f, g, grad_distance, epsilon, grad, classes
        )
        tokens = slice(classes.start * n, classes.stop * n)
        if grad_x is not None:
            grad_x.addmm_(grad_similarity, y_rows[tokens])
        if grad_y is not None:
            torch.mm(grad_similarity.t(), x_rows, out=grad_y[tokens])
    return (
        None if grad_x is None else grad_x.reshape(batch, m, d),
        None if grad_y is None else grad_y.reshape(num_classes, n, d),
    )


def compile_variants() -> Iterator[launch.KernelVariant]:
    """Every variant of the kernel that :func:`similarity_gradients` can launch: each setting
    of :func:`reidkit.kernels.launch.pairwise_launches`, feature dtype and gradient mode."""
    for dtype in launch.KERNEL_DTYPES:
        features = f"*{launch.TRITON_TYPES[dtype]}"
        signature = {"x_ptr": features, "y_ptr": features}
        signature |= {f"{name}_ptr": "*fp32" for name in ("f", "g", "grad_distance", "out")}
        signature |= dict.fromkeys(_INTEGERS, "i32")
        signature["inv_epsilon"] = "fp32"
        for grad in GRAD_MODES:
            for setting in launch.pairwise_launches(backward=True):
                constexprs = {"RIDGE_32": RIDGE[torch.float32], "IMPLICIT": grad == "implicit"}
                yield launch.KernelVariant(
                    _similarity_gradient_kernel,
                    f"pairwise_backward_{grad}",
                    setting,
                    launch.TRITON_TYPES[dtype],
                    signature,
                    constexprs | setting.constexprs(),
                )
