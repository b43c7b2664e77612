"""Transformation loss of MMPL's collaborative prompt learning (sec. 3.3, eq. 22-23).

Each of the ``K`` visual prompts ``P_v^k`` (eq. 21) is pulled towards the frozen text
encoder's feature ``T^k = T(P_t^k)`` (eq. 22) of the level-``k`` prompt of the image's
identity, while the prompts are pushed apart from each other::

    L_tr = sum_k || W P_v^k - T^k ||_1 / E  +  sum_{i<j} max(0, m - || W P_v^i - W P_v^j ||_1 / E)

Three choices complete the printed eq. 23:

- Width: visual prompts live in the vision transformer's width, text features in the joint
  space of size ``E``; a learned linear projection ``W`` (bias-free) maps the prompts to the
  joint space, the identity when both widths agree.
- Scale: both L1 norms are divided by ``E`` (mean absolute differences), so the size of the
  term, and the meaning of the margin, do not depend on the width.
- Bound: as printed, ``- sum_{i<j} || P_v^i - P_v^j ||_1`` is unbounded below, so the loss
  could be lowered without limit by scaling the prompts apart. The hinge with margin ``m``
  rewards diversity only until two prompts differ by ``m`` per coordinate on average; it
  equals the printed term plus a constant while every pair is closer than ``m``.

The text features are targets: they are detached (the prompts are frozen in stage 2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.losses.base import ReductionLoss


class TransformationLoss(ReductionLoss):
    """``L_tr`` (MMPL eq. 23) between ``K`` visual prompts and the ``K`` text features.

    Args:
        prompt_width: width of the visual prompt tokens (the vision transformer's width).
        text_dim: size ``E`` of the text features.
        margin: ``m``, the per-coordinate L1 gap beyond which two prompts count as diverse.
        diversity_weight: weight of the diversity term (1 in eq. 23).
        reduction: ``"mean"`` or ``"sum"`` over the images, or ``"none"`` for ``(B,)`` values.

    Attributes:
        projection: ``nn.Linear(prompt_width, text_dim, bias=False)``, or ``nn.Identity`` when
            the widths agree; train it with the visual prompt generator.
    """

    def __init__(
        self,
        prompt_width: int,
        text_dim: int,
        margin: float = 1.0,
        diversity_weight: float = 1.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        checks.check_integer("prompt_width", prompt_width, 1)
        checks.check_integer("text_dim", text_dim, 1)
        checks.check_number("margin", margin, at_least=0)
        checks.check_number("diversity_weight", diversity_weight, at_least=0)
        self.prompt_width = prompt_width
        self.text_dim = text_dim
        self.margin = margin
        self.diversity_weight = diversity_weight
        self.projection: nn.Module = (
            nn.Identity()
            if prompt_width == text_dim
            else nn.Linear(prompt_width, text_dim, bias=False)
        )

    def forward(self, visual_prompts: Tensor, text_features: Tensor) -> Tensor:
        """The transformation loss of each image, reduced over the batch.

        Args:
            visual_prompts: ``(B, K, prompt_width)`` prompts ``P_v^1 .. P_v^K``.
            text_features: ``(B, K, text_dim)`` features ``T^k`` of each image's identity at
                each level (detached here).

        Returns:
            ``L_tr``: a scalar, or ``(B,)`` with ``reduction="none"``.
        """
        if visual_prompts.dim() != 3 or visual_prompts.shape[2] != self.prompt_width:
            raise ValueError(
                f"visual_prompts must have shape (B, K, {self.prompt_width}), got "
                f"{tuple(visual_prompts.shape)}"
            )
        expected = (*visual_prompts.shape[:2], self.text_dim)
        if text_features.shape != expected:
            raise ValueError(
                f"text_features must have shape {expected}, got {tuple(text_features.shape)}"
            )
        projected = self.projection(visual_prompts)
        alignment = (projected - text_features.detach()).abs().mean(dim=-1).sum(dim=-1)
        num_levels = projected.shape[1]
        first, second = torch.triu_indices(
            num_levels, num_levels, offset=1, device=projected.device
        )
        gaps = (projected[:, first] - projected[:, second]).abs().mean(dim=-1)
        diversity = (self.margin - gaps).clamp_min(0).sum(dim=-1)
        return self.reduce(alignment + self.diversity_weight * diversity)

    def extra_repr(self) -> str:
        return (
            f"prompt_width={self.prompt_width}, text_dim={self.text_dim}, margin={self.margin}, "
            f"diversity_weight={self.diversity_weight}, {super().extra_repr()}"
        )
