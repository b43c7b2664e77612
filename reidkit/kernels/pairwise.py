"""The autograd function of the feature-level kernels, which :func:`reidkit.pairwise_ot_distance`
applies on the Triton path. Importing this module imports Triton."""

from __future__ import annotations

import torch
from torch import Tensor

from reidkit.kernels.pairwise_backward import pairwise_feature_grads
from reidkit.kernels.pairwise_forward import pairwise_potentials


class PairwiseOTDistance(torch.autograd.Function):
    """``(B, L)`` OT distances from features; forward and backward are fused kernels.

    The forward (:func:`reidkit.kernels.pairwise_forward.pairwise_potentials`) returns the
    distances and the (non-differentiable) convergence flags ``(B, L)``, and saves only ``x``,
    ``y`` and the potentials ``f`` ``(B, L, M)``, ``g`` ``(B, L, N)``; the backward
    (:func:`reidkit.kernels.pairwise_backward.pairwise_feature_grads`) recomputes cost and plan
    on chip from them.
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
        needs = ctx.needs_input_grad[:2]
        grad_x, grad_y = pairwise_feature_grads(
            x, y, f, g, grad_distance, ctx.epsilon, ctx.grad, needs=(needs[0], needs[1])
        )
        return (
            None if grad_x is None else grad_x.to(x.dtype),
            None if grad_y is None else grad_y.to(y.dtype),
            *(None,) * 6,
        )
