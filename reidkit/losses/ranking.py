"""Cross-modal ranking loss with semi-hard or hardest negatives (UniPT eq. 5, VSE++).

For a batch of ``N`` image-text pairs ``(v_n, t_n)`` with identities ``y_n`` and similarity
``s`` (the cosine by default), eq. 5 is, for each pair,

.. math::

    \\ell_n = \\max(α - s(v_n, t_n) + s(v_n, t^-_n), 0)
            + \\max(α - s(t_n, v_n) + s(t_n, v^-_n), 0),

with margin ``α = 0.2``. The positive of an image is its paired text and the other way round;
the negatives of a pair are the items of the other modality that show another identity (an
item of the same identity is neither positive nor negative). Which negative:

* ``"semi-hard"`` (UniPT, after Ge et al. [13] and FaceNet): the most similar negative that is
  still less similar than the positive, ``max {s_neg : s_neg < s_pos}``; when every negative
  is at least as similar as the positive, the least similar negative (FaceNet's rule, as in
  TensorFlow's ``triplet_semihard_loss``);
* ``"hardest"`` (VSE++ [7]): the most similar negative.

Pairs whose identity is the only one in the batch have no negative and are left out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reidkit import checks
from reidkit.distances import Distance, DotProductSimilarity, get_distance
from reidkit.losses.base import ReductionLoss

NEGATIVE_RULES = ("semi-hard", "hardest")


class CrossModalRankingLoss(ReductionLoss):
    """Bidirectional hinge ranking loss of paired image and text features (UniPT eq. 5).

    Args:
        margin: ``α`` > 0 (0.2 in UniPT).
        negatives: ``"semi-hard"`` or ``"hardest"`` (see the module docstring).
        distance: a :class:`~reidkit.distances.Distance` or its name; a distance ``d`` is
            ranked as the similarity ``-d`` (the margin is in its units). Default: the cosine
            similarity.
        reduction: ``"mean"`` over the pairs with a negative, ``"sum"`` or ``"none"``
            (``(N,)``).
    """

    def __init__(
        self,
        margin: float = 0.2,
        negatives: str = "semi-hard",
        distance: str | Distance | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        checks.check_number("margin", margin, above=0, finite=True)
        checks.check_choice("negatives", negatives, NEGATIVE_RULES)
        self.margin = margin
        self.negatives = negatives
        self.distance = (
            DotProductSimilarity(normalize_embeddings=True)
            if distance is None
            else get_distance(distance)
        )

    def forward(self, image_features: Tensor, text_features: Tensor, labels: Tensor) -> Tensor:
        """Loss of ``N`` pairs: ``image_features`` and ``text_features`` ``(N, D)``, their
        identities ``labels`` ``(N,)``."""
        checks.check_float_matrix("image_features", image_features)
        checks.check_float_matrix("text_features", text_features)
        if text_features.shape != image_features.shape:
            raise ValueError(
                "text_features must have the image_features' shape "
                f"{tuple(image_features.shape)}, got {tuple(text_features.shape)}"
            )
        checks.check_labels("labels", labels, image_features.shape[0])
        similarity = self.distance.pairwise(image_features, text_features)  # (images, texts)
        if not self.distance.is_inverted:
            similarity = -similarity
        negative = labels[:, None] != labels[None, :]
        image_to_text = self._hinge(similarity, negative)
        text_to_image = self._hinge(similarity.T, negative)
        return self.reduce(image_to_text + text_to_image, negative.any(dim=1))

    def _hinge(self, similarity: Tensor, negative: Tensor) -> Tensor:
        """``max(α - s_pos + s_neg, 0)`` per anchor (row); positives on the diagonal."""
        positive = similarity.diagonal()
        with torch.no_grad():
            lowest = torch.finfo(similarity.dtype).min
            candidates = similarity.masked_fill(~negative, lowest)
            if self.negatives == "semi-hard":
                easier = negative & (similarity < positive[:, None])
                semi_hard = similarity.masked_fill(~easier, lowest).argmax(dim=1)
                easiest = similarity.masked_fill(~negative, -lowest).argmin(dim=1)
                chosen = torch.where(easier.any(dim=1), semi_hard, easiest)
            else:
                chosen = candidates.argmax(dim=1)
        hardest = similarity.gather(1, chosen.unsqueeze(1)).squeeze(1)
        return (self.margin - positive + hardest).clamp_min(0)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, negatives={self.negatives!r}, {super().extra_repr()}"
