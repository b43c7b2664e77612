"""Multi-attribute binary cross-entropy with imbalance weights (VAL-PAT eq. 3-4).

For ``M`` attributes, logits ``z_i`` of sample ``i`` (``p_{i,j} = σ(z_{i,j})``) and targets
``y_{i,j} ∈ [0, 1]`` (hard 0/1 labels for eq. 3, soft probabilities for eq. 4):

.. math::

    \\ell_i = -\\sum_{j=1}^{M} \\big(w^+_j\\, y_{i,j} \\log p_{i,j}
        + w^-_j\\, (1 - y_{i,j}) \\log(1 - p_{i,j})\\big).

VAL-PAT prints eq. 3 and eq. 4 without the minus sign and with the sum over ``N`` where the
``M`` attributes are meant; this is the negative log-likelihood over the attributes, the loss
the cited weighted BCE ([32]) minimises. Its imbalance weights ``w_j`` follow that baseline
(Jia et al.): with ``r_j`` the share of training samples that show attribute ``j``,
``w^+_j = exp(1 - r_j)`` and ``w^-_j = exp(r_j)`` (:func:`attribute_imbalance_weights`), so the
rare value of each attribute weighs more. Without weights every ``w`` is 1.

Eq. 3 (``L_A^H``) sums this loss over the image and the text predictions with the mined
labels; eq. 4 (``L_A^S``) takes as the image's targets the momentum classifier's probabilities
for the paired text key, and as the text's targets those for the image key (see
:class:`~reidkit.losses.VALPATLoss`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from reidkit import checks
from reidkit.losses.base import ReductionLoss, at_least_float32


def attribute_imbalance_weights(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(w^+, w^-)``, each ``(M,)``: ``exp(1 - r_j)`` and ``exp(r_j)`` for the positive share
    ``r_j`` of every attribute column of ``labels`` ``(N, M)`` (0/1, any dtype)."""
    if not isinstance(labels, Tensor) or labels.dim() != 2 or labels.shape[0] == 0:
        raise ValueError(
            f"labels must be an (N, M) tensor with N >= 1, got {checks.describe(labels)}"
        )
    ratio = labels.double().mean(dim=0)
    if bool(((ratio < 0) | (ratio > 1)).any()):
        raise ValueError("labels must hold values in [0, 1]")
    return torch.exp(1.0 - ratio).float(), torch.exp(ratio).float()


class AttributeBCELoss(ReductionLoss):
    """Weighted multi-label binary cross-entropy, summed over attributes (VAL-PAT eq. 3-4).

    Args:
        positive_weights: ``w^+`` ``(M,)``, or ``None`` for ones.
        negative_weights: ``w^-`` ``(M,)``, or ``None`` for ``positive_weights`` (one weight
            per attribute, as eq. 3 prints ``w_j``) or ones.
        reduction: ``"mean"`` over samples, ``"sum"`` or ``"none"`` (``(N,)``).

    The weights are buffers (saved with the model, moved with it).
    """

    positive_weights: Tensor | None
    negative_weights: Tensor | None

    def __init__(
        self,
        positive_weights: Tensor | None = None,
        negative_weights: Tensor | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        if negative_weights is None:
            negative_weights = positive_weights
        for name, weights in (
            ("positive_weights", positive_weights),
            ("negative_weights", negative_weights),
        ):
            if weights is not None and (
                not isinstance(weights, Tensor)
                or weights.dim() != 1
                or not weights.is_floating_point()
                or bool((weights < 0).any())
            ):
                raise ValueError(
                    f"{name} must be a floating (M,) tensor of weights >= 0, got "
                    f"{checks.describe(weights)}"
                )
        if (positive_weights is None) != (negative_weights is None) or (
            positive_weights is not None
            and negative_weights is not None
            and positive_weights.shape != negative_weights.shape
        ):
            raise ValueError("positive_weights and negative_weights must both be (M,) tensors")
        self.positive_weights: Tensor | None
        self.negative_weights: Tensor | None
        self.register_buffer("positive_weights", positive_weights)
        self.register_buffer("negative_weights", negative_weights)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, M)`` against ``targets`` ``(N, M)`` in ``[0, 1]``."""
        checks.check_float_matrix("logits", logits)
        if not isinstance(targets, Tensor) or targets.shape != logits.shape:
            raise ValueError(
                f"targets must have the logits' shape {tuple(logits.shape)}, got "
                f"{checks.describe(targets)}"
            )
        if self.positive_weights is not None and self.positive_weights.shape[0] != logits.shape[1]:
            raise ValueError(
                f"logits must have one column per weight ({self.positive_weights.shape[0]}), got "
                f"{logits.shape[1]}"
            )
        logits = at_least_float32(logits)
        targets = targets.to(logits.dtype)
        if bool(((targets < 0) | (targets > 1)).any()):
            raise ValueError("targets must hold values in [0, 1]")
        log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
        positive, negative = targets * log_p, (1 - targets) * log_not_p
        if self.positive_weights is not None and self.negative_weights is not None:  # both or none
            positive = positive * self.positive_weights
            negative = negative * self.negative_weights
        return self.reduce(-(positive + negative).sum(dim=1))
