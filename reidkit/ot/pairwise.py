"""OT distances between every image's patch set and every class's token set (MMPL eq. 13-19).

For L2-normalised patch features ``x`` ``(B, M, D)`` and token features ``y`` ``(L, N, D)``, the
``(B, L)`` matrix of Sinkhorn distances for the cosine cost ``C = 1 - x y^T``. The torch path
works on chunks of classes and keeps only the potentials between forward and backward, so
neither the ``(B, L, M, N)`` cost nor the plan is ever held whole; the Triton path
(:mod:`reidkit.kernels`) keeps each problem on chip.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reidkit.ot import validation
from reidkit.ot.diagnostics import report_nonconvergence
from reidkit.ot.implicit import implicit_vjp, plan_from_potentials
from reidkit.ot.sinkhorn import Backend, GradMode, OnNonconvergence, StopRule, sinkhorn

_CHUNK_ELEMENTS = 1 << 24  # cost entries per chunk of classes (64 MiB in float32)


def pairwise_ot_distance(
    x: Tensor,
    y: Tensor,
    *,
    epsilon: float = 0.1,
    max_iter: int = 50,
    tol: float | None = 1e-3,
    grad: GradMode = "implicit",
    backend: Backend = "auto",
    x_mask: Tensor | None = None,
    stop_rule: StopRule = "marginal",
    chunk_size: int | None = None,
    on_nonconvergence: OnNonconvergence = "warn",
) -> Tensor:
    """``d[b, l] = <T*, C>`` for ``C = 1 - x[b] y[l]^T`` with uniform marginals.

    Args:
        x: ``(B, M, D)`` L2-normalised patch features (MMPL's selected patches f_m).
        y: ``(L, N, D)`` L2-normalised token features (the N learnable tokens of each class).
            ``x`` and ``y`` of different float dtypes are computed in their promoted dtype.
        epsilon, max_iter, tol, stop_rule, on_nonconvergence: as in :func:`reidkit.sinkhorn`
            (``on_nonconvergence`` counts the ``(b, l)`` problems).
        grad: ``"implicit"`` or ``"envelope"`` (constant memory in ``max_iter``), or
            ``"unrolled"`` (autograd through the iterations; testing only).
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (Triton on CUDA tensors).
        x_mask: ``(B, M)`` boolean, ``True`` on real patches (at least one per image), for
            images with fewer patches.
        chunk_size: classes per chunk on the torch path (default: about 16M cost entries).

    Returns:
        ``(B, L)`` distances in the promoted dtype of ``x`` and ``y``, differentiable with
        respect to both.
    """
    _check_features(x, y, x_mask)
    epsilon, max_iter, tol = validation.check_solver_options(
        epsilon, max_iter, tol, grad, backend, stop_rule, on_nonconvergence
    )
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or an integer >= 1, got {chunk_size!r}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    from reidkit.kernels import triton_available, triton_supports_pairwise

    supported = grad != "unrolled" and triton_available() and triton_supports_pairwise(x, y)
    if backend == "triton" and not supported:
        raise ValueError(
            "backend='triton' needs Triton, grad 'implicit' or 'envelope' and a supported shape "
            f"(see reidkit.kernels.triton_supports_pairwise); got x {tuple(x.shape)}, "
            f"y {tuple(y.shape)}, grad={grad!r}"
        )
    use_triton = backend == "triton" or (backend == "auto" and supported and x.is_cuda)
    options = _Options(epsilon, max_iter, tol, grad, stop_rule)
    if chunk_size is None:
        per_class = x.shape[0] * x.shape[1] * y.shape[1]
        chunk_size = max(1, _CHUNK_ELEMENTS // per_class)
    if grad == "unrolled":
        chunks = [
            _solve_chunk(x, y[start : start + chunk_size], x_mask, options, "unrolled")
            for start in range(0, y.shape[0], chunk_size)
        ]
        distance = torch.cat([chunk[0] for chunk in chunks], dim=1)
        converged = torch.cat([chunk[3] for chunk in chunks], dim=1)
    elif use_triton:
        from reidkit.kernels.sinkhorn_kernels import PairwiseOTDistance

        distance, converged = PairwiseOTDistance.apply(
            x, y, x_mask, epsilon, max_iter, tol, stop_rule, grad
        )
    else:
        distance, converged = _PairwiseOT.apply(x, y, x_mask, options, chunk_size)
    report_nonconvergence(
        converged, on_nonconvergence, "pairwise_ot_distance", max_iter, tol, stop_rule
    )
    return distance


class _Options:
    def __init__(
        self, epsilon: float, max_iter: int, tol: float | None, grad: str, stop_rule: str
    ) -> None:
        self.epsilon, self.max_iter, self.tol = epsilon, max_iter, tol
        self.grad, self.stop_rule = grad, stop_rule


def _check_features(x: Tensor, y: Tensor, x_mask: Tensor | None) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor of shape (B, M, D), got {_describe(x)}")
    if not isinstance(y, Tensor) or y.dim() != 3 or not y.is_floating_point():
        raise ValueError(f"y must be a float tensor of shape (L, N, D), got {_describe(y)}")
    if x.shape[2] != y.shape[2]:
        raise ValueError(
            f"x and y must share the feature size D, got {x.shape[2]} and {y.shape[2]}"
        )
    if 0 in x.shape or 0 in y.shape:
        raise ValueError(f"x and y must be non-empty, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"x and y must be on one device, got {x.device} and {y.device}")
    validation.check_finite("x", x.detach())
    validation.check_finite("y", y.detach())
    if x_mask is None:
        return
    if not isinstance(x_mask, Tensor) or x_mask.dtype != torch.bool:
        raise ValueError(
            f"x_mask must be a boolean tensor of shape {tuple(x.shape[:2])} (True on real "
            f"patches), got {_describe(x_mask)}"
        )
    if x_mask.shape != x.shape[:2]:
        raise ValueError(
            f"x_mask must have the shape (B, M) = {tuple(x.shape[:2])} of x, got "
            f"{tuple(x_mask.shape)}"
        )
    if x_mask.device != x.device:
        raise ValueError(f"x_mask must be on the device of x ({x.device}), got {x_mask.device}")
    empty = (~x_mask.any(dim=1)).nonzero()
    if empty.numel() > 0:
        raise ValueError(
            f"x_mask must keep at least one real patch per image, got none for image "
            f"{int(empty[0, 0])}"
        )


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"dtype {value.dtype} and shape {tuple(value.shape)}"
    return type(value).__name__


def _chunk_cost(x: Tensor, y: Tensor) -> Tensor:
    """``(B, Lc, M, N)`` cosine costs ``1 - x[b] y[l]^T``."""
    return 1 - torch.einsum("bmd,lnd->blmn", x, y)


def _solve_chunk(
    x: Tensor, y: Tensor, x_mask: Tensor | None, options: _Options, grad: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Distances ``(B, Lc)``, potentials ``(B, Lc, M)``, ``(B, Lc, N)`` and convergence flags
    ``(B, Lc)`` of one chunk."""
    row_mask = None if x_mask is None else x_mask[:, None, :]
    result = sinkhorn(
        _chunk_cost(x, y),
        epsilon=options.epsilon,
        max_iter=options.max_iter,
        tol=options.tol,
        grad=grad,
        backend="torch",
        mask=(row_mask, None),
        stop_rule=options.stop_rule,
        on_nonconvergence="ignore",  # reported once for all chunks
    )
    return result.distance, result.f, result.g, result.converged


class _PairwiseOT(torch.autograd.Function):
    """The torch path: chunked over classes, saving only ``x``, ``y`` and the potentials."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        y: Tensor,
        x_mask: Tensor | None,
        options: _Options,
        chunk_size: int,
    ) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            chunks = [
                _solve_chunk(x, y[start : start + chunk_size], x_mask, options, "envelope")
                for start in range(0, y.shape[0], chunk_size)
            ]
        distance, f, g, converged = (torch.cat(parts, dim=1) for parts in zip(*chunks))
        ctx.save_for_backward(x, y, f, g)
        ctx.x_mask, ctx.options, ctx.chunk_size = x_mask, options, chunk_size
        ctx.mark_non_differentiable(converged)
        return distance.to(x.dtype), converged

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_distance: Tensor, _: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x, y, f, g = ctx.saved_tensors
        options, chunk = ctx.options, ctx.chunk_size
        work = f.dtype
        xw, yw = x.to(work), y.to(work)
        grad_x = torch.zeros_like(xw)
        grad_y = torch.zeros_like(yw)
        batch, m, n = x.shape[0], x.shape[1], y.shape[1]
        for start in range(0, y.shape[0], chunk):
            stop = min(start + chunk, y.shape[0])
            cost = _chunk_cost(xw, yw[start:stop]).reshape(-1, m, n)
            f_chunk = f[:, start:stop]
            if ctx.x_mask is not None:  # masked patches carry no mass
                f_chunk = f_chunk.masked_fill(~ctx.x_mask[:, None, :], float("-inf"))
            f_chunk, g_chunk = f_chunk.reshape(-1, m), g[:, start:stop].reshape(-1, n)
            upstream = grad_distance[:, start:stop].reshape(-1).to(work)
            if options.grad == "implicit":
                grad_cost = implicit_vjp(cost, f_chunk, g_chunk, options.epsilon, None, upstream)[0]
            else:
                grad_cost = plan_from_potentials(cost, f_chunk, g_chunk, options.epsilon)
                grad_cost.mul_(upstream[:, None, None])
            grad_cost = grad_cost.reshape(batch, stop - start, m, n)
            grad_x -= torch.einsum("blmn,lnd->bmd", grad_cost, yw[start:stop])
            grad_y[start:stop] = -torch.einsum("blmn,bmd->lnd", grad_cost, xw)
        return grad_x.to(x.dtype), grad_y.to(y.dtype), None, None, None
