"""Identification loss of both modalities through one classifier (UniPT eq. 4).

.. math:: L_{id}(v, t) = -(y \\log \\hat y_v + y \\log \\hat y_t),

the cross-entropy of the image's and of the text's identity logits (from the
:class:`~reidkit.heads.SharedIdentityClassifier`) against the pair's identity ``y``, summed.
"""

from __future__ import annotations

from torch import Tensor

from reidkit import checks
from reidkit.losses.base import ReductionLoss
from reidkit.losses.label_smoothing import CrossEntropyLabelSmooth


class CrossModalIdentityLoss(ReductionLoss):
    """Cross-entropy of image logits plus that of text logits, per pair (UniPT eq. 4).

    Args:
        label_smoothing: ``ε`` of both cross-entropies (UniPT: 0).
        reduction: ``"mean"`` over pairs, ``"sum"`` or ``"none"`` (``(N,)``).
    """

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.cross_entropy = CrossEntropyLabelSmooth(label_smoothing, reduction="none")

    def forward(self, image_logits: Tensor, text_logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of ``image_logits`` and ``text_logits`` ``(N, C)`` for ``labels`` ``(N,)``."""
        checks.check_float_matrix("image_logits", image_logits)
        if not isinstance(text_logits, Tensor) or text_logits.shape != image_logits.shape:
            raise ValueError(
                f"text_logits must have the image_logits' shape {tuple(image_logits.shape)}, "
                f"got {checks.describe(text_logits)}"
            )
        image = self.cross_entropy(image_logits, labels)
        text = self.cross_entropy(text_logits, labels)
        return self.reduce(image + text)
