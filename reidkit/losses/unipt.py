"""UniPT's two objectives: pre-training (eq. 3) and supervised fine-tuning (eq. 7).

Pre-training on images with pseudo texts (sec. 4.1):

.. math:: L_{pre} = L_{con} + β L_{mlm}, \\qquad β = 1,

the symmetric contrastive loss of eq. 1 (:class:`~reidkit.losses.ImageTextContrastiveLoss`)
and the masked language modelling loss of eq. 2
(:class:`~reidkit.losses.MaskedLanguageModelingLoss`); ``β = 0`` is the "w/o MLM" ablation of
table 5.

Fine-tuning on a text-to-image ReID data set (sec. 4.2):

.. math:: L_{ft} = L_{id} + L_{rk} + γ L_{pgu}, \\qquad
    L_{pgu} = L_{id}(\\tilde v, \\tilde t) + L_{rk}(\\tilde v, \\tilde t),

the identification loss of eq. 4 (:class:`~reidkit.losses.CrossModalIdentityLoss`) and the
ranking loss of eq. 5 (:class:`~reidkit.losses.CrossModalRankingLoss`, margin 0.2) on the
global embeddings ``v``, ``t``, plus, with ``γ = 1``, the same two losses on the
granularity-unified features of LGUR's prototype-based granularity unification (PGU, eq. 6).
The PGU module (LGUR's dictionary and prototypes) is not part of reidkit, so ``γ`` defaults to
0, the "w/o L_pgu" row of table 6; a model that computes ``ṽ`` and ``t̃`` itself passes them as
:class:`UnifiedFeatures` and sets ``γ``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.losses.base import ObjectiveOutput
from reidkit.losses.contrastive import ImageTextContrastiveLoss
from reidkit.losses.identity import CrossModalIdentityLoss
from reidkit.losses.mlm import MaskedLanguageModelingLoss
from reidkit.losses.ranking import CrossModalRankingLoss


class UniPTPretrainingLoss(nn.Module):
    """``L_pre = L_con + β L_mlm`` (UniPT eq. 3).

    Args:
        mlm_weight: ``β`` (1; 0 drops the MLM term, table 5).
        temperature: ``τ`` of the contrastive loss (eq. 1 as printed: 1, the plain cosine).
        learnable_temperature: learn ``τ`` as CLIP does (then start from ``temperature``).
    """

    def __init__(
        self,
        mlm_weight: float = 1.0,
        temperature: float = 1.0,
        learnable_temperature: bool = False,
    ) -> None:
        super().__init__()
        checks.check_number("mlm_weight", mlm_weight, at_least=0, finite=True)
        self.mlm_weight = mlm_weight
        self.contrastive = ImageTextContrastiveLoss(temperature, learnable_temperature)
        self.mlm = MaskedLanguageModelingLoss()

    def forward(
        self,
        image_embeddings: Tensor,
        text_embeddings: Tensor,
        mlm_logits: Tensor | None = None,
        mlm_targets: Tensor | None = None,
    ) -> ObjectiveOutput:
        """The objective of a batch.

        Args:
            image_embeddings: ``(N, D)`` ``V`` of the images.
            text_embeddings: ``(N, D)`` ``T`` of their (unmasked) pseudo texts.
            mlm_logits: ``(S, vocab)`` predictions at the masked positions of the texts
                (``None`` only with ``β = 0``).
            mlm_targets: ``(S,)`` the tokens that were there.

        Returns:
            :class:`ObjectiveOutput` with terms ``contrastive``, ``mlm`` (with ``β > 0``) and
            ``temperature`` (``τ``).
        """
        contrastive = self.contrastive(image_embeddings, text_embeddings)
        terms = {
            "contrastive": contrastive,
            "temperature": torch.tensor(self.contrastive.temperature.value()),
        }
        if self.mlm_weight == 0:
            return ObjectiveOutput(contrastive, terms)
        if mlm_logits is None or mlm_targets is None:
            raise ValueError("mlm_logits and mlm_targets are needed when mlm_weight (β) > 0")
        terms["mlm"] = self.mlm(mlm_logits, mlm_targets)
        return ObjectiveOutput(contrastive + self.mlm_weight * terms["mlm"], terms)


class UnifiedFeatures(NamedTuple):
    """Granularity-unified features of a batch of pairs and their identity logits (LGUR's PGU):
    ``image`` and ``text`` ``(N, D)``, ``image_logits`` and ``text_logits`` ``(N, C)``."""

    image: Tensor
    text: Tensor
    image_logits: Tensor
    text_logits: Tensor


class UniPTFinetuningLoss(nn.Module):
    """``L_ft = L_id + L_rk + γ L_pgu`` (UniPT eq. 7).

    Args:
        margin: ``α`` of the ranking loss (0.2).
        negatives: ``"semi-hard"`` (eq. 5) or ``"hardest"``.
        unified_weight: ``γ``; 0 (default) unless the model computes granularity-unified
            features (the PGU module is not part of reidkit).
        label_smoothing: of the identification loss (0 in UniPT).
    """

    def __init__(
        self,
        margin: float = 0.2,
        negatives: str = "semi-hard",
        unified_weight: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        checks.check_number("unified_weight", unified_weight, at_least=0, finite=True)
        self.unified_weight = unified_weight
        self.identity = CrossModalIdentityLoss(label_smoothing)
        self.ranking = CrossModalRankingLoss(margin, negatives)

    def forward(
        self,
        image_embeddings: Tensor,
        text_embeddings: Tensor,
        image_logits: Tensor,
        text_logits: Tensor,
        labels: Tensor,
        unified: UnifiedFeatures | None = None,
    ) -> ObjectiveOutput:
        """The objective of a batch of ``N`` image-text pairs.

        Args:
            image_embeddings: ``(N, D)`` ``v``.
            text_embeddings: ``(N, D)`` ``t``.
            image_logits: ``(N, C)`` identity logits of ``v`` (shared classifier).
            text_logits: ``(N, C)`` identity logits of ``t``.
            labels: ``(N,)`` identities.
            unified: the PGU features, needed when ``γ > 0``.

        Returns:
            :class:`ObjectiveOutput` with terms ``id``, ``ranking`` (and ``unified`` with PGU).
        """
        identity = self.identity(image_logits, text_logits, labels)
        ranking = self.ranking(image_embeddings, text_embeddings, labels)
        terms = {"id": identity, "ranking": ranking}
        loss = identity + ranking
        if self.unified_weight > 0:
            if unified is None:
                raise ValueError(
                    "unified must hold the granularity-unified features when unified_weight "
                    f"(γ) is {self.unified_weight}; the PGU module that computes them is not part"
                    " of reidkit"
                )
            terms["unified"] = self.identity(
                unified.image_logits, unified.text_logits, labels
            ) + self.ranking(unified.image, unified.text, labels)
            loss = loss + self.unified_weight * terms["unified"]
        return ObjectiveOutput(loss, terms)
