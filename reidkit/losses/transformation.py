"""Transformation loss of MMPL's collaborative prompt learning (sec. 3.3, eq. 22-23).

Each of the ``K`` visual prompts ``P_v^k`` (eq. 21) is pulled towards the frozen text
encoder's feature ``T^k = T(P_t^k)`` (eq. 22) of the level-``k`` prompt of the image's
identity, while the prompts are pushed apart from each other. Two forms are offered.

``form="printed"`` is eq. 23 as printed, sums of absolute differences::

    L_tr = sum_k || W P_v^k - T^k ||_1  -  sum_{i<j} || W P_v^i - W P_v^j ||_1

``form="stabilised"`` (the default) bounds and rescales it::

    L_tr = sum_k |W P_v^k - T^k|_1 / E  +  sum_{i<j} max(0, m_ij - |W P_v^i - W P_v^j|_1 / E)

In both, ``W`` is a learned bias-free linear projection from the vision transformer's width to
the text features' size ``E`` (the identity when both widths agree): the printed equation
compares the two directly, which is only defined when the widths agree. The stabilised form
adds two choices:

- Scale: both L1 norms are divided by ``E`` (mean absolute differences), so the size of the
  term does not depend on the width.
- Bound: the printed difference is unbounded below for ``K >= 3`` (with ``W P_v^1 = -W P_v^3 = s u``
  and ``W P_v^2 = 0`` the first sum grows as ``2 s |u|`` and the second as ``4 s |u|``), so the
  loss can be lowered without limit by moving the prompts apart (for ``K = 2`` the triangle
  inequality bounds it by ``-|| T^1 - T^2 ||_1``). The hinge rewards diversity only until
  two prompts differ by ``m_ij`` per coordinate on average, and equals the printed term plus a
  constant while every pair is closer than that.

The margin is in the units of the features. With ``margin=None`` (the default) it is taken
from the targets: ``m_ij = || T^i - T^j ||_1 / E``, the gap between the image's own text
features of levels ``i`` and ``j``. Then the two terms cannot pull against each other: at the
alignment term's minimum ``W P_v^k = T^k`` every pair sits exactly at its margin, so the
minimum of ``L_tr`` is zero and is reached there. A fixed margin larger than the gap between the
targets (as ``m = 1`` against gaps of 0.55-0.62 with a tiny random CLIP) makes the diversity
term push the prompts off their targets.

The text features are targets: they are detached (the prompts are frozen in stage 2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.losses.base import ReductionLoss

FORMS = ("stabilised", "printed")
"""The forms of :class:`TransformationLoss`: bounded and per coordinate, or eq. 23 as printed."""


class TransformationLoss(ReductionLoss):
    """``L_tr`` (MMPL eq. 23) between ``K`` visual prompts and the ``K`` text features.

    Args:
        prompt_width: width of the visual prompt tokens (the vision transformer's width).
        text_dim: size ``E`` of the text features.
        margin: ``m``, the per-coordinate L1 gap beyond which two prompts count as diverse
            (``form="stabilised"`` only); ``None``: each pair's gap between its targets,
            ``|| T^i - T^j ||_1 / E`` (see the module's notes).
        diversity_weight: weight of the diversity term (1 in eq. 23).
        form: ``"stabilised"`` (per-coordinate means, hinge) or ``"printed"`` (eq. 23:
            sums of absolute differences, minus the prompts' pairwise distances, unbounded
            below for ``K >= 3``).
        reduction: ``"mean"`` or ``"sum"`` over the images, or ``"none"`` for ``(B,)`` values.

    Attributes:
        projection: ``nn.Linear(prompt_width, text_dim, bias=False)``, or ``nn.Identity`` when
            the widths agree; train it with the visual prompt generator.
    """

    def __init__(
        self,
        prompt_width: int,
        text_dim: int,
        margin: float | None = None,
        diversity_weight: float = 1.0,
        form: str = "stabilised",
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        checks.check_integer("prompt_width", prompt_width, 1)
        checks.check_integer("text_dim", text_dim, 1)
        checks.check_number("margin", margin, at_least=0, optional=True)
        checks.check_number("diversity_weight", diversity_weight, at_least=0)
        checks.check_choice("form", form, FORMS)
        if form == "printed" and margin is not None:
            raise ValueError(f"margin applies to form='stabilised' only, got margin={margin}")
        self.prompt_width = prompt_width
        self.text_dim = text_dim
        self.margin = margin
        self.diversity_weight = diversity_weight
        self.form = form
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
        targets = text_features.detach()
        projected = self.projection(visual_prompts)
        norm = self._l1
        alignment = norm(projected - targets).sum(dim=-1)
        num_levels = projected.shape[1]
        first, second = torch.triu_indices(
            num_levels, num_levels, offset=1, device=projected.device
        )
        gaps = norm(projected[:, first] - projected[:, second])  # (B, K (K - 1) / 2)
        if self.form == "printed":
            diversity = -gaps.sum(dim=-1)
        else:
            margin = (
                norm(targets[:, first] - targets[:, second]) if self.margin is None else self.margin
            )
            diversity = (margin - gaps).clamp_min(0).sum(dim=-1)
        return self.reduce(alignment + self.diversity_weight * diversity)

    def _l1(self, differences: Tensor) -> Tensor:
        """L1 norms over the last dimension: per-coordinate means when stabilised, as printed
        sums otherwise."""
        if self.form == "stabilised":
            return differences.abs().mean(dim=-1)
        return differences.abs().sum(dim=-1)

    def extra_repr(self) -> str:
        margin = "targets" if self.margin is None else self.margin
        return (
            f"prompt_width={self.prompt_width}, text_dim={self.text_dim}, form={self.form}, "
            f"margin={margin}, diversity_weight={self.diversity_weight}, {super().extra_repr()}"
        )
