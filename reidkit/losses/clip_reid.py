"""The stage-2 loss of CLIP-ReID (eq. 6) and of MMPL's collaborative prompt learning (eq. 24).

An image model with two BNNecks (:class:`reidkit.CLIPReIDModel`) is trained with the ID loss
on both necks' logits, the batch-hard triplet loss on its triplet features, and the
image-to-text cross-entropy of its projected feature ``V`` against every identity's text
feature; MMPL takes that cross-entropy against each of its ``K`` levels of text features
``T^k`` and averages it, and adds the transformation loss of its ``K`` visual prompts::

    L = w_id  sum_n L_id(z_n, y)                       (ID, label smoothing, per BNNeck n)
      + w_tri sum_f L_tri(f, y)                        (batch-hard triplet, per feature f)
      + w_i2t mean_k L_i2tce(V, T^k, y)                (eq. 5 against level k; or sum_k)
      + w_tr  L_tr(P_v, [T^1_y, ..., T^K_y])           (eq. 23, with visual prompts only)

With ``K = 1`` and no visual prompts this is CLIP-ReID's eq. 6 (``w_id = 0.25`` in its code).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.losses.label_smoothing import CrossEntropyLabelSmooth
from reidkit.losses.multi_granularity import LEVEL_REDUCTIONS, multi_granularity_loss
from reidkit.losses.text_cross_entropy import ImageToTextCrossEntropy
from reidkit.losses.transformation import TransformationLoss
from reidkit.losses.triplet import TripletLoss


class CLIPReIDLossOutput(NamedTuple):
    """What :class:`CLIPReIDLoss` returns.

    Attributes:
        loss: the weighted total, a scalar.
        terms: the unweighted terms, scalars named ``id`` (summed over the necks),
            ``triplet`` (summed over the features), ``image_to_text`` (averaged over the
            levels) and, with visual prompts, ``transformation``.
    """

    loss: Tensor
    terms: dict[str, Tensor]


class CLIPReIDLoss(nn.Module):
    """ID + triplet + image-to-text cross-entropy (+ transformation), weighted.

    Args:
        id_weight: ``w_id`` (CLIP-ReID: 0.25).
        triplet_weight: ``w_tri``.
        image_to_text_weight: ``w_i2t``.
        transformation_weight: ``w_tr``, used with visual prompts.
        label_smoothing: ``epsilon`` of the ID and image-to-text cross-entropies.
        triplet_margin: margin of the triplet loss.
        transformation: MMPL's :class:`~reidkit.losses.TransformationLoss` (its learned
            projection trains with the model), or ``None`` for a model without visual prompts.
        level_reduction: ``"mean"`` or ``"sum"`` of the image-to-text term over the ``K``
            levels (:func:`~reidkit.losses.multi_granularity_loss`).
    """

    def __init__(
        self,
        id_weight: float = 0.25,
        triplet_weight: float = 1.0,
        image_to_text_weight: float = 1.0,
        transformation_weight: float = 1.0,
        label_smoothing: float = 0.1,
        triplet_margin: float = 0.3,
        transformation: TransformationLoss | None = None,
        level_reduction: str = "mean",
    ) -> None:
        super().__init__()
        weights = {
            "id_weight": id_weight,
            "triplet_weight": triplet_weight,
            "image_to_text_weight": image_to_text_weight,
            "transformation_weight": transformation_weight,
        }
        for name, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {weight!r}")
        if transformation is not None and not isinstance(transformation, TransformationLoss):
            raise TypeError(
                "transformation must be a TransformationLoss or None, got "
                f"{type(transformation).__name__}"
            )
        self.id_weight = float(id_weight)
        self.triplet_weight = float(triplet_weight)
        self.image_to_text_weight = float(image_to_text_weight)
        self.transformation_weight = float(transformation_weight)
        self.identity = CrossEntropyLabelSmooth(label_smoothing)
        self.triplet = TripletLoss(triplet_margin)
        self.image_to_text = ImageToTextCrossEntropy(label_smoothing)
        self.transformation = transformation
        checks.check_choice("level_reduction", level_reduction, LEVEL_REDUCTIONS)
        self.level_reduction = level_reduction

    def forward(
        self,
        logits: Sequence[Tensor],
        triplet_features: Sequence[Tensor],
        embedding: Tensor,
        labels: Tensor,
        text_features: Tensor | Sequence[Tensor],
        visual_prompts: Tensor | None = None,
    ) -> CLIPReIDLossOutput:
        """The loss of a batch of ``B`` images.

        Args:
            logits: the necks' ID logits, each ``(B, C)``
                (:attr:`reidkit.models.CLIPReIDOutput.logits`).
            triplet_features: the features of the triplet loss, each ``(B, D_f)``.
            embedding: ``(B, E)`` projected image features ``V``.
            labels: ``(B,)`` identities in ``[0, C)``.
            text_features: every identity's text feature ``(C, E)``, or ``K`` levels of them
                (fixed in stage 2: computed once from the learned prompts).
            visual_prompts: ``(B, K, width)`` visual prompts ``P_v`` (MMPL eq. 21), or
                ``None``; needs ``transformation``.

        Returns:
            :class:`CLIPReIDLossOutput`: the total and the named terms.
        """
        levels = [text_features] if isinstance(text_features, Tensor) else list(text_features)
        if not logits or not triplet_features:
            raise ValueError("logits and triplet_features must each hold at least one tensor")
        ids = sum(self.identity(neck_logits, labels) for neck_logits in logits)
        triplets = sum(self.triplet(features, labels) for features in triplet_features)
        image_to_text = multi_granularity_loss(
            self.image_to_text, embedding, levels, labels, self.level_reduction
        )
        loss = (
            self.id_weight * ids
            + self.triplet_weight * triplets
            + self.image_to_text_weight * image_to_text
        )
        terms = {"id": ids, "triplet": triplets, "image_to_text": image_to_text}
        if visual_prompts is not None:
            if self.transformation is None:
                raise ValueError(
                    "visual_prompts were given but the loss has no transformation loss; pass "
                    "transformation=TransformationLoss(...)"
                )
            targets = torch.stack([text[labels] for text in levels], dim=1)
            terms["transformation"] = self.transformation(visual_prompts, targets)
            loss = loss + self.transformation_weight * terms["transformation"]
        return CLIPReIDLossOutput(loss, terms)

    def extra_repr(self) -> str:
        return (
            f"id_weight={self.id_weight}, triplet_weight={self.triplet_weight}, "
            f"image_to_text_weight={self.image_to_text_weight}, "
            f"transformation_weight={self.transformation_weight}, "
            f"level_reduction={self.level_reduction}"
        )
