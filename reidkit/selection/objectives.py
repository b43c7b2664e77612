"""How MMPL combines its per-level losses in stage 1 (eq. 20).

Stage 1 trains the ``K`` prompt levels with, per level, the image-text contrastive losses
(eq. 2-3) and the patch-to-token alignment loss (eq. 19)::

    L_stage1 = sum_k alpha_k (L_i2t^k + L_t2i^k) + sum_k beta_k L_otce^k        (eq. 20)

The text term of stage 2 is :func:`reidkit.losses.multi_granularity_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from reidkit._deprecation import moved_names


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
    total: Tensor | int = sum(weight * loss for weight, loss in zip(alphas, contrastive))
    if alignment is not None:
        if len(alignment) != count:
            raise ValueError(
                f"alignment must hold one loss per level ({count}), got {len(alignment)}"
            )
        betas = _level_weights("beta", beta, count)
        total = total + sum(weight * loss for weight, loss in zip(betas, alignment))
    return torch.as_tensor(total)


__getattr__ = moved_names(
    __name__, {"multi_granularity_loss": "reidkit.losses.multi_granularity_loss"}
)
