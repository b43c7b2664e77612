"""The fine-tuning loss of PCL-CLIP (sec. 4.1, Table 1).

A model with BNNecks (:class:`reidkit.models.PCLCLIPModel`) is trained with the prototypical
contrastive loss of its normalised feature ``f`` against the memory's centroids (eq. 4), the
label-smoothed ID loss on its classifiers' logits and the batch-hard triplet loss on its
features before the necks ``[v, V]``, each weighted, so that every row of Table 1 without
prompts is a choice of weights::

    L = w_pcl L_pcl(f, K, y) + w_id sum_n L_id(z_n, y) + w_tri L_tri([v, V], y)

Table 1: Baseline1 is ``(w_pcl, w_id, w_tri) = (0, 1, 0)``, Baseline2 ``(0, 1, 1)``, PCL-CLIP2
``(1, 0, 0)``, PCL-CLIP3 ``(1, 0, 1)``, PCL-CLIP4 ``(1, 1, 0)`` and PCL-CLIP5 ``(1, 1, 1)``; the
released code weighs the ID loss of its one classifier by 0.25.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.losses.base import ObjectiveOutput
from reidkit.losses.label_smoothing import CrossEntropyLabelSmooth
from reidkit.losses.pcl import PCLLoss
from reidkit.losses.triplet import TripletLoss


class PCLCLIPLoss(nn.Module):
    """PCL + ID + triplet, weighted (PCL-CLIP Table 1).

    A term whose weight is 0 is not computed.

    Args:
        pcl_weight: ``w_pcl`` of :class:`~reidkit.losses.PCLLoss` (eq. 4).
        id_weight: ``w_id`` (0.25 in the released code).
        triplet_weight: ``w_tri``.
        temperature: ``tau`` of eq. 4.
        label_smoothing: ``epsilon`` of the ID loss.
        triplet_margin: margin of the triplet loss.

    Raises:
        ValueError: a negative weight, or all three weights 0.
    """

    def __init__(
        self,
        pcl_weight: float = 1.0,
        id_weight: float = 0.25,
        triplet_weight: float = 0.0,
        temperature: float = 0.05,
        label_smoothing: float = 0.1,
        triplet_margin: float = 0.3,
    ) -> None:
        super().__init__()
        for name, weight in (
            ("pcl_weight", pcl_weight),
            ("id_weight", id_weight),
            ("triplet_weight", triplet_weight),
        ):
            checks.check_number(name, weight, at_least=0)
        if pcl_weight == id_weight == triplet_weight == 0:
            raise ValueError("pcl_weight, id_weight and triplet_weight must not all be 0")
        self.pcl_weight = float(pcl_weight)
        self.id_weight = float(id_weight)
        self.triplet_weight = float(triplet_weight)
        self.pcl = PCLLoss(temperature)
        self.identity = CrossEntropyLabelSmooth(label_smoothing)
        self.triplet = TripletLoss(triplet_margin)

    def forward(
        self,
        features: Tensor,
        embeddings: Tensor,
        logits: Sequence[Tensor],
        labels: Tensor,
        centroids: Tensor,
    ) -> ObjectiveOutput:
        """The loss of a batch of ``B`` images.

        Args:
            features: ``(B, d)`` normalised features ``f`` (the PCL loss's).
            embeddings: ``(B, d)`` features before the necks (the triplet loss's).
            logits: the classifiers' ID logits, each ``(B, C)``.
            labels: ``(B,)`` identities or pseudo labels in ``[0, C)``.
            centroids: ``(C, d)`` the memory's centroids ``K`` (constants).

        Returns:
            :class:`~reidkit.losses.ObjectiveOutput`: the total and the unweighted terms of
            non-zero weight, named ``pcl``, ``id`` (summed over the classifiers) and
            ``triplet``.
        """
        if self.id_weight > 0 and not logits:
            raise ValueError("logits must hold at least one tensor when id_weight > 0")
        terms: dict[str, Tensor] = {}
        if self.pcl_weight > 0:
            terms["pcl"] = self.pcl(features, labels, centroids)
        if self.id_weight > 0:
            terms["id"] = torch.stack([self.identity(z, labels) for z in logits]).sum()
        if self.triplet_weight > 0:
            terms["triplet"] = self.triplet(embeddings, labels)
        weights = {"pcl": self.pcl_weight, "id": self.id_weight, "triplet": self.triplet_weight}
        loss = sum(weights[name] * value for name, value in terms.items())
        return ObjectiveOutput(loss, terms)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return (
            f"pcl_weight={self.pcl_weight}, id_weight={self.id_weight}, "
            f"triplet_weight={self.triplet_weight}"
        )
