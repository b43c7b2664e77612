"""OT distances between every image's patch set and every class's token set (MMPL eq. 13-19).

For patch features ``x`` ``(B, M, D)`` and token features ``y`` ``(L, N, D)``, the ``(B, L)``
matrix of Sinkhorn distances for the ground cost ``C[b, l] = distance(x[b], y[l])``: by default
MMPL's cosine cost ``1 - cos(f_m, p_n)`` (:class:`reidkit.distances.CosineDistance`). The
features are prepared once (:meth:`reidkit.distances.Distance.prepare`: L2-normalised for the
cosine), outside the autograd function. Its torch path works on chunks of classes and keeps only
the prepared features and the potentials between forward and backward, which recomputes (and
differentiates) the cost chunk by chunk, so neither the ``(B, L, M, N)`` cost nor the plan is
ever held whole; its Triton path (:mod:`reidkit.kernels`, cosine cost ``1 - x y^T`` of the unit
features) keeps each problem on chip.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import torch
from torch import Tensor

from reidkit import checks
from reidkit.distances import CosineDistance, Distance, get_distance
from reidkit.kernels import triton_supports_pairwise
from reidkit.ot.backend import use_triton
from reidkit.ot.diagnostics import envelope_fallback, report_grad_fallback, report_nonconvergence
from reidkit.ot.implicit import implicit_vjp, plan_from_potentials
from reidkit.ot.options import SinkhornOptions, options_from_keywords
from reidkit.ot.sinkhorn import sinkhorn

_CHUNK_ELEMENTS = 1 << 24  # cost entries per chunk of classes (64 MiB in float32)

DEFAULT_OPTIONS = SinkhornOptions(epsilon=0.1)
"""The settings of :func:`pairwise_ot_distance` without ``options``: MMPL's epsilon = 0.1."""


def pairwise_ot_distance(
    x: Tensor,
    y: Tensor,
    *,
    distance: str | Distance = "cosine",
    options: SinkhornOptions | None = None,
    x_mask: Tensor | None = None,
    chunk_size: int | None = None,
    **solver_options: Any,
) -> Tensor:
    """``d[b, l] = <T*, C>`` for the cost ``C = distance(x[b], y[l])`` with uniform marginals.

    Args:
        x: ``(B, M, D)`` patch features (MMPL's selected patches f_m).
        y: ``(L, N, D)`` token features (the N learnable tokens of each class). ``x`` and ``y``
            of different float dtypes are computed in their promoted dtype.
        distance: the ground cost between a patch and a token, a
            :class:`~reidkit.distances.Distance` or its name (:func:`reidkit.get_distance`):
            ``"cosine"`` (default; ``1 - cos``, the features need not be normalised), or any
            other, a similarity (``is_inverted``) entering as its negative. The Triton kernels
            compute the cosine cost only.
        options: the solver settings, a :class:`~reidkit.ot.SinkhornOptions` (default
            ``SinkhornOptions(epsilon=0.1)``); ``on_nonconvergence`` counts the ``(b, l)``
            problems. ``grad="unrolled"`` (autograd through the iterations) is for testing.
        x_mask: ``(B, M)`` boolean, ``True`` on real patches (at least one per image), for
            images with fewer patches.
        chunk_size: classes per chunk on the torch path (default: about 16M cost entries).
        **solver_options: fields of :class:`~reidkit.ot.SinkhornOptions` as keywords
            (``epsilon``, ``max_iter``, ``tol``, ``stop_rule``, ``grad``, ``backend``,
            ``on_nonconvergence``, ``check_every``), overriding those of ``options``, as in
            :func:`reidkit.sinkhorn`.

    Returns:
        ``(B, L)`` distances in the promoted dtype of ``x`` and ``y``, differentiable with
        respect to both.

    Raises:
        ValueError: on bad features, masks or settings.
    """
    options = options_from_keywords(
        "pairwise_ot_distance", DEFAULT_OPTIONS if options is None else options, solver_options
    )
    distance = get_distance(distance)
    _check_features(x, y, x_mask)
    checks.check_integer("chunk_size", chunk_size, 1, optional=True)
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = distance.prepare(x).to(dtype), distance.prepare(y).to(dtype)
    cosine = isinstance(distance, CosineDistance)
    triton = use_triton(
        options,
        lambda x, y: cosine and triton_supports_pairwise(x, y),
        "the cosine distance and a supported shape (see reidkit.kernels.triton_supports_pairwise)",
        x=x,
        y=y,
    )
    if chunk_size is None:
        per_class = x.shape[0] * x.shape[1] * y.shape[1]
        chunk_size = max(1, _CHUNK_ELEMENTS // per_class)
    if options.grad == "unrolled":
        chunks = [
            _solve_chunk(x, y[start : start + chunk_size], x_mask, options, distance)
            for start in range(0, y.shape[0], chunk_size)
        ]
        distances = torch.cat([chunk[0] for chunk in chunks], dim=1)
        converged = torch.cat([chunk[3] for chunk in chunks], dim=1)
    else:
        problem = _Problem(options, distance, chunk_size, triton)
        distances, converged = _PairwiseOT.apply(x, y, x_mask, problem)
    report_nonconvergence(
        converged,
        options.on_nonconvergence,
        "pairwise_ot_distance",
        options.max_iter,
        options.tol,
        options.stop_rule,
    )
    return distances


@dataclasses.dataclass(frozen=True)
class _Problem:
    """What the autograd function needs besides the tensors."""

    options: SinkhornOptions
    distance: Distance
    chunk_size: int
    triton: bool


def _check_features(x: Tensor, y: Tensor, x_mask: Tensor | None) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor of shape (B, M, D), got {checks.describe(x)}")
    if not isinstance(y, Tensor) or y.dim() != 3 or not y.is_floating_point():
        raise ValueError(f"y must be a float tensor of shape (L, N, D), got {checks.describe(y)}")
    if x.shape[2] != y.shape[2]:
        raise ValueError(
            f"x and y must share the feature size D, got {x.shape[2]} and {y.shape[2]}"
        )
    if 0 in x.shape or 0 in y.shape:
        raise ValueError(f"x and y must be non-empty, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"x and y must be on one device, got {x.device} and {y.device}")
    checks.check_finite("x", x.detach())
    checks.check_finite("y", y.detach())
    if x_mask is None:
        return
    if not isinstance(x_mask, Tensor) or x_mask.dtype != torch.bool:
        raise ValueError(
            f"x_mask must be a boolean tensor of shape {tuple(x.shape[:2])} (True on real "
            f"patches), got {checks.describe(x_mask)}"
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


def _chunk_cost(distance: Distance, x: Tensor, y: Tensor) -> Tensor:
    """``(B, Lc, M, N)`` costs of the prepared patches ``x`` ``(B, M, D)`` against the prepared
    tokens ``y`` ``(Lc, N, D)``.

    A similarity enters as its negative.
    """
    values = distance.compute(x[:, None], y[None])
    return -values if distance.is_inverted else values


def _solve_chunk(
    x: Tensor, y: Tensor, x_mask: Tensor | None, options: SinkhornOptions, distance: Distance
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Distances ``(B, Lc)``, potentials ``(B, Lc, M)``, ``(B, Lc, N)`` and convergence flags
    ``(B, Lc)`` of one chunk, on the torch backend."""
    row_mask = None if x_mask is None else x_mask[:, None, :]
    result = sinkhorn(
        _chunk_cost(distance, x, y),
        options=options,
        mask=(row_mask, None),
        backend="torch",
        on_nonconvergence="ignore",  # reported once for all chunks
    )
    return result.distance, result.f, result.g, result.converged


class _PairwiseOT(torch.autograd.Function):
    """``(B, L)`` distances and convergence flags, saving only the features and the potentials.

    The forward runs the chunked torch solver or the fused kernel; the backward recomputes the
    cost and the plan from the potentials (chunk by chunk, or on chip). A problem whose implicit
    gradient is not finite gets its envelope gradient (:mod:`reidkit.ot.diagnostics`). Both
    backwards sum the gradients of all problems into the features, where a problem's NaN or
    infinity shows: when the feature gradients are not finite (and the upstream gradient is),
    the backward is recomputed on the torch path, deciding problem by problem.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        y: Tensor,
        x_mask: Tensor | None,
        problem: _Problem,
    ) -> tuple[Tensor, Tensor]:
        options = problem.options
        if problem.triton:
            from reidkit.kernels.pairwise_forward import pairwise_potentials

            distance, f, g, converged = pairwise_potentials(
                x, y, x_mask, options.epsilon, options.max_iter, options.tol, options.stop_rule
            )
        else:
            chunk = problem.chunk_size
            envelope = dataclasses.replace(options, grad="envelope")  # no graph: under no_grad
            with torch.no_grad():
                chunks = [
                    _solve_chunk(x, y[start : start + chunk], x_mask, envelope, problem.distance)
                    for start in range(0, y.shape[0], chunk)
                ]
            distance, f, g, converged = (torch.cat(parts, dim=1) for parts in zip(*chunks))
        ctx.save_for_backward(x, y, f, g)
        ctx.x_mask, ctx.problem = x_mask, problem
        ctx.mark_non_differentiable(converged)
        return distance.to(x.dtype), converged

    @staticmethod
    def backward(ctx: Any, grad_distance: Tensor, _: Tensor | None) -> tuple[Tensor | None, ...]:
        x, y, f, g = ctx.saved_tensors
        problem: _Problem = ctx.problem
        options = problem.options
        if problem.triton:
            from reidkit.kernels.pairwise_backward import pairwise_feature_grads

            grad_x, grad_y = cast(  # both: `needs` is left at (True, True)
                tuple[Tensor, Tensor],
                pairwise_feature_grads(x, y, f, g, grad_distance, options.epsilon, options.grad),
            )
        else:
            grad_x, grad_y = _torch_backward(x, y, f, g, ctx.x_mask, grad_distance, problem)
        if (
            options.grad == "implicit"
            and not (checks.is_finite(grad_x) and checks.is_finite(grad_y))
            and checks.is_finite(grad_distance)
        ):
            grad_x, grad_y = _torch_backward(
                x, y, f, g, ctx.x_mask, grad_distance, problem, fallback=True
            )
        return grad_x.to(x.dtype), grad_y.to(y.dtype), None, None


def _torch_backward(
    x: Tensor,
    y: Tensor,
    f: Tensor,
    g: Tensor,
    x_mask: Tensor | None,
    grad_distance: Tensor,
    problem: _Problem,
    fallback: bool = False,
) -> tuple[Tensor, Tensor]:
    """Gradients ``(B, M, D)``, ``(L, N, D)`` of ``sum(grad_distance * d)``, chunk by chunk.

    Each chunk's cost is recomputed with autograd and differentiated with the cost gradient of
    the implicit (or envelope) backward; the potentials ``f`` ``(B, L, M)``, ``g``
    ``(B, L, N)`` give the plan and its dtype the working dtype. With ``fallback``, a problem
    whose implicit gradient is not finite gets its envelope gradient, counted and reported.
    """
    epsilon, chunk = problem.options.epsilon, problem.chunk_size
    work = f.dtype
    x_leaf = x.detach().to(work).requires_grad_()
    y_work = y.detach().to(work)
    grad_x = torch.zeros_like(x_leaf)
    grad_y = torch.zeros_like(y_work)
    batch, m, n = x.shape[0], x.shape[1], y.shape[1]
    fell_back = []
    for start in range(0, y.shape[0], chunk):
        stop = min(start + chunk, y.shape[0])
        y_leaf = y_work[start:stop].detach().requires_grad_()
        with torch.enable_grad():
            cost = _chunk_cost(problem.distance, x_leaf, y_leaf)
        flat_cost = cost.detach().reshape(-1, m, n)
        f_chunk = f[:, start:stop]
        if x_mask is not None:  # masked patches carry no mass
            f_chunk = f_chunk.masked_fill(~x_mask[:, None, :], float("-inf"))
        f_chunk, g_chunk = f_chunk.reshape(-1, m), g[:, start:stop].reshape(-1, n)
        upstream = grad_distance[:, start:stop].reshape(-1).to(work)
        if problem.options.grad == "implicit":
            grad_cost, grad_a, grad_b = implicit_vjp(
                flat_cost, f_chunk, g_chunk, epsilon, None, upstream
            )
            if fallback:
                plan = plan_from_potentials(flat_cost, f_chunk, g_chunk, epsilon)
                grad_cost, _, _, chunk_fell_back = envelope_fallback(
                    grad_cost, grad_a, grad_b, plan, None, upstream
                )
                fell_back.append(chunk_fell_back)
        else:
            grad_cost = plan_from_potentials(flat_cost, f_chunk, g_chunk, epsilon)
            grad_cost.mul_(upstream[:, None, None])
        chunk_grad_x, grad_y[start:stop] = torch.autograd.grad(
            cost, (x_leaf, y_leaf), grad_cost.reshape(batch, stop - start, m, n)
        )
        grad_x += chunk_grad_x
    if fell_back:
        report_grad_fallback(torch.cat(fell_back), "pairwise_ot_distance")
    return grad_x, grad_y
