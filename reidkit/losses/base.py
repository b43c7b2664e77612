"""What every reidkit loss shares: the reduction over samples.

A loss computes one value per anchor (row) and a mask of the rows that have a defined loss
(e.g. a triplet anchor without a positive); :meth:`ReductionLoss.reduce` turns them into the
result the ``reduction`` argument asks for. Argument checks live in :mod:`reidkit.checks`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit._deprecation import moved_names

REDUCTIONS = ("mean", "sum", "none")


class ReductionLoss(nn.Module):
    """Base class of losses with a ``reduction`` over their per-anchor values.

    Args:
        reduction: ``"mean"`` over the valid anchors, ``"sum"`` over them, or ``"none"`` for
            the ``(N,)`` per-anchor losses (0 at the anchors without a defined loss).
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        checks.check_choice("reduction", reduction, REDUCTIONS)
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


class ObjectiveOutput(NamedTuple):
    """What a composed objective returns (UniPT's, VAL-PAT's).

    Attributes:
        loss: the weighted total, a scalar.
        terms: scalars by name: the unweighted terms, and what else the objective reports.
    """

    loss: Tensor
    terms: dict[str, Tensor]


def at_least_float32(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 when it is in a half type (AMP), unchanged otherwise."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


__getattr__ = moved_names(
    __name__,
    {
        "check_features": "reidkit.checks.check_float_matrix",
        "check_labels": "reidkit.checks.check_labels",
        "describe": "reidkit.checks.describe",
    },
)
