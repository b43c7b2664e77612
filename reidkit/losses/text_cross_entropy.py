"""Image-to-text cross-entropy of CLIP-ReID's second stage (eq. 5).

Every image feature ``V_i`` is classified against the text features ``T_1..T_L`` of all ``L``
identities' learned prompts, with a label-smoothed target ``q``:

.. math::

    L_{i2tce}(i) = \\sum_{l=1}^{L} -q_l
        \\log \\frac{\\exp(s(V_i, T_l))}{\\sum_{a=1}^{L} \\exp(s(V_i, T_a))}.
"""

from __future__ import annotations

from torch import Tensor

from reidkit import checks
from reidkit.distances import similarity_logits
from reidkit.losses.base import ReductionLoss
from reidkit.losses.label_smoothing import CrossEntropyLabelSmooth


class ImageToTextCrossEntropy(ReductionLoss):
    """Label-smoothed cross-entropy of image features against all identities' text features.

    The text features act as the classifier: the similarity logits of eq. 5 go through a
    :class:`~reidkit.losses.CrossEntropyLabelSmooth` (held as :attr:`cross_entropy`).

    Args:
        epsilon: label smoothing ``ε`` of ``q`` (0.1 in CLIP-ReID).
        normalize: cosine similarity (as printed) instead of the reference code's plain dot
            product of unnormalised features.
        temperature: divides the similarities when no ``logit_scale`` is given (> 0).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(
        self,
        epsilon: float = 0.1,
        normalize: bool = False,
        temperature: float = 1.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        checks.check_number("temperature", temperature, above=0)
        self.cross_entropy = CrossEntropyLabelSmooth(epsilon, reduction="none")
        self.normalize = normalize
        self.temperature = temperature

    @property
    def epsilon(self) -> float:
        """The label smoothing ``ε``."""
        return self.cross_entropy.epsilon

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        labels: Tensor,
        logit_scale: Tensor | float | None = None,
    ) -> Tensor:
        """Loss of ``image_features`` ``(N, D)`` against ``text_features`` ``(L, D)``.

        Args:
            image_features: ``(N, D)``.
            text_features: ``(L, D)``, row ``l`` the text feature of identity ``l`` (usually
                computed once per epoch, without gradient).
            labels: ``(N,)`` identities in ``[0, L)``.
            logit_scale: scalar multiplying the similarities instead of ``1 / temperature``.
        """
        checks.check_float_matrix("image_features", image_features)
        checks.check_float_matrix("text_features", text_features)
        checks.check_same_width("text_features", text_features, "image features", image_features)
        logits = similarity_logits(
            image_features,
            text_features,
            normalize=self.normalize,
            temperature=self.temperature,
            logit_scale=logit_scale,
        )
        return self.reduce(self.cross_entropy(logits, labels))

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}, temperature={self.temperature}, {super().extra_repr()}"
