"""What every reidkit loss shares: argument checks and the reduction over samples.

A loss computes one value per anchor (row) and a mask of the rows that have a defined loss
(e.g. a triplet anchor without a positive); :meth:`ReductionLoss.reduce` turns them into the
result the ``reduction`` argument asks for.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

REDUCTIONS = ("mean", "sum", "none")


class ReductionLoss(nn.Module):
    """Base class of losses with a ``reduction`` over their per-anchor values.

    Args:
        reduction: ``"mean"`` over the valid anchors, ``"sum"`` over them, or ``"none"`` for
            the ``(N,)`` per-anchor losses (0 at the anchors without a defined loss).
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def reduce(self, losses: Tensor, valid: Tensor | None = None) -> Tensor:
        """Reduce ``(N,)`` per-anchor ``losses``, counting only the ``valid`` ``(N,)`` rows.

        Without a valid row the mean and the sum are 0, still attached to the graph, so a
        batch without any usable anchor contributes no gradient instead of NaN.
        """
        if valid is not None:
            losses = losses.where(valid, losses.new_zeros(()))
        if self.reduction == "none":
            return losses
        total = losses.sum()
        if self.reduction == "sum":
            return total
        if valid is None:
            return total / max(losses.numel(), 1)
        return total / valid.sum().clamp_min(1)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


def at_least_float32(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 when it is in a half type (AMP), unchanged otherwise."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def check_features(name: str, features: Tensor) -> None:
    """``features`` must be a floating ``(N, D)`` tensor."""
    if not isinstance(features, Tensor) or features.dim() != 2 or not features.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor of shape (N, D), got {describe(features)}"
        )


def check_labels(name: str, labels: Tensor, count: int) -> None:
    """``labels`` must be an integer ``(count,)`` tensor."""
    if (
        not isinstance(labels, Tensor)
        or labels.shape != (count,)
        or labels.is_floating_point()
        or labels.is_complex()
        or labels.dtype == torch.bool
    ):
        raise ValueError(
            f"{name} must be an integer tensor of shape ({count},), got {describe(labels)}"
        )


def describe(value: object) -> str:
    """``"shape (N, D) and dtype torch.float32"`` for a tensor, the type's name otherwise."""
    if isinstance(value, Tensor):
        return f"shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__
