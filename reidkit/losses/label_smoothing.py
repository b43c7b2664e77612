"""Cross-entropy with label smoothing, the ID loss of ReID baselines (Szegedy et al., 2016).

With ``C`` classes and smoothing ``ε``, the target of a sample of class ``y`` is
``q_c = (1 - ε) [c = y] + ε / C`` and the loss is ``-Σ_c q_c log softmax(z)_c``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reidkit import checks
from reidkit.losses.base import ReductionLoss, at_least_float32


class CrossEntropyLabelSmooth(ReductionLoss):
    """Label-smoothed cross-entropy of ``(N, C)`` logits.

    Args:
        epsilon: smoothing ``ε`` in ``[0, 1)``; 0 gives the ordinary cross-entropy.
        num_classes: ``C``, checked against the logits when given.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(
        self, epsilon: float = 0.1, num_classes: int | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        checks.check_number("epsilon", epsilon, at_least=0, below=1)
        checks.check_integer("num_classes", num_classes, 1, optional=True)
        self.epsilon = epsilon
        self.num_classes = num_classes

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` for the class indices ``labels`` ``(N,)`` in ``[0, C)``."""
        checks.check_float_matrix("logits", logits)
        classes = logits.shape[1]
        if self.num_classes is not None and classes != self.num_classes:
            raise ValueError(
                f"logits must have num_classes={self.num_classes} columns, got {classes}"
            )
        checks.check_labels("labels", labels, logits.shape[0])
        if bool(((labels < 0) | (labels >= classes)).any()):
            raise ValueError(f"labels must lie in [0, {classes}), got values outside that range")
        log_prob = torch.log_softmax(at_least_float32(logits), dim=1)
        true_class = log_prob.gather(1, labels.unsqueeze(1)).squeeze(1)
        losses = -(1.0 - self.epsilon) * true_class - self.epsilon * log_prob.mean(dim=1)
        return self.reduce(losses)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, num_classes={self.num_classes}, {super().extra_repr()}"
