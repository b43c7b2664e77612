"""How MMPL combines its per-level losses: stage 1 (eq. 20) and the text term of stage 2 (eq. 24).

Stage 1 trains the ``K`` prompt levels with, per level, the image-text contrastive losses
(eq. 2-3) and the patch-to-token alignment loss (eq. 19)::

    L_stage1 = sum_k alpha_k (L_i2t^k + L_t2i^k) + sum_k beta_k L_otce^k        (eq. 20)

Stage 2 (eq. 24) sums ``L_id + L_tri + L_i2tce + L_tr``. Its image-to-text cross-entropy is
taken against the multi-granularity text features: one cross-entropy over the identities per
level, with that level's text features as the classifier, averaged over the ``K`` levels
(:func:`multi_granularity_loss`), so that ``K = 1`` gives CLIP-ReID's ``L_i2tce`` (eq. 5) and
the weight of the text term does not grow with ``K``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def _level_weights(name: str, weights: float | Sequence[float], count: int) -> list[float]:
    if isinstance(weights, (int, float)):
        return [float(weights)] * count
    if len(weights) != count:
        raise ValueError(f"{name} must be a number or hold one weight per level ({count})")
    return [float(weight) for weight in weights]


def stage1_objective(
    contrastive: Sequence[Tensor],
    alignment: Sequence[Tensor] | None = None,
    alpha: float | Sequence[float] = 1.0,
    beta: float | Sequence[float] = 0.1,
) -> Tensor:
    """MMPL eq. 20 from per-level losses.

    Args:
        contrastive: ``K`` scalars ``L_i2t^k + L_t2i^k``.
        alignment: ``K`` scalars ``L_otce^k``; ``None`` without patch-to-token alignment (the
            ablation of table 4).
        alpha: ``alpha_k`` (a number for every level, or one per level; paper: 1).
        beta: ``beta_k`` (paper: 0.1).

    Returns:
        Scalar stage-1 loss.
    """
    if len(contrastive) == 0:
        raise ValueError("contrastive must hold one loss per level, got none")
    count = len(contrastive)
    alphas = _level_weights("alpha", alpha, count)
    total = sum(weight * loss for weight, loss in zip(alphas, contrastive))
    if alignment is not None:
        if len(alignment) != count:
            raise ValueError(
                f"alignment must hold one loss per level ({count}), got {len(alignment)}"
            )
        betas = _level_weights("beta", beta, count)
        total = total + sum(weight * loss for weight, loss in zip(betas, alignment))
    return torch.as_tensor(total)


def multi_granularity_loss(
    criterion: Callable[[Tensor, Tensor, Tensor], Tensor],
    image_features: Tensor,
    level_text_features: Sequence[Tensor],
    labels: Tensor,
) -> Tensor:
    """The stage-2 image-to-text loss against ``K`` levels of text features, averaged.

    Args:
        criterion: ``criterion(image_features, text_features, labels)``, e.g.
            :class:`reidkit.ImageToTextCrossEntropy` (CLIP-ReID's eq. 5).
        image_features: ``(B, E)`` image features ``V_i``.
        level_text_features: ``K`` tensors ``(L, E)``, the features ``T^k`` of every
            identity's level-``k`` prompt (fixed in stage 2).
        labels: ``(B,)`` identities.

    Returns:
        ``mean_k criterion(V, T^k, y)``: eq. 5 against each level's text features, averaged.
    """
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
    return torch.stack(losses).mean()
