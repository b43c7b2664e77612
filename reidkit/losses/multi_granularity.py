"""A loss against ``K`` levels of text features: the text term of MMPL's stage 2.

MMPL's stage 2 (eq. 24) sums ``L_id + L_tri + L_i2tce + L_tr``. Its image-to-text
cross-entropy is taken against the multi-granularity text features: one cross-entropy over the
identities per level, with that level's text features as the classifier. The paper does not
say how the levels combine; two readings are offered: averaged (``reduction="mean"``, so that
``K = 1`` gives CLIP-ReID's ``L_i2tce`` (eq. 5) and the weight of the text term does not grow
with ``K``) or summed (``reduction="sum"``, as eq. 20 and eq. 23 sum their level terms).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from reidkit import checks

LEVEL_REDUCTIONS = ("mean", "sum")
"""How :func:`multi_granularity_loss` combines its ``K`` levels."""


def multi_granularity_loss(
    criterion: Callable[[Tensor, Tensor, Tensor], Tensor],
    image_features: Tensor,
    level_text_features: Sequence[Tensor],
    labels: Tensor,
    reduction: str = "mean",
) -> Tensor:
    """The stage-2 image-to-text loss against ``K`` levels of text features.

    Args:
        criterion: ``criterion(image_features, text_features, labels)``, e.g.
            :class:`reidkit.ImageToTextCrossEntropy` (CLIP-ReID's eq. 5).
        image_features: ``(B, E)`` image features ``V_i``.
        level_text_features: ``K`` tensors ``(L, E)``, the features ``T^k`` of every
            identity's level-``k`` prompt (fixed in stage 2).
        labels: ``(B,)`` identities.
        reduction: ``"mean"`` or ``"sum"`` over the levels.

    Returns:
        ``mean_k criterion(V, T^k, y)`` (or the sum): eq. 5 against each level's text features.
    """
    checks.check_choice("reduction", reduction, LEVEL_REDUCTIONS)
    if len(level_text_features) == 0:
        raise ValueError("level_text_features must hold at least one level")
    losses = []
    for text in level_text_features:
        if text.dim() != 2 or text.shape[1] != image_features.shape[-1]:
            raise ValueError(
                f"level_text_features must be (L, {image_features.shape[-1]}) tensors, got "
                f"{tuple(text.shape)}"
            )
        losses.append(criterion(image_features, text, labels))
    stacked = torch.stack(losses)
    return stacked.mean() if reduction == "mean" else stacked.sum()
