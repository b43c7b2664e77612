"""Batch-hard triplet loss (Hermans et al., 2017), the metric loss of ReID baselines.

For each anchor ``i`` of the batch, the hardest positive is the farthest sample of the same
identity (other than ``i``) and the hardest negative the closest sample of another identity:

.. math::

    d^+_i = \\max_{j \\ne i,\\, y_j = y_i} d(x_i, x_j), \\qquad
    d^-_i = \\min_{k:\\, y_k \\ne y_i} d(x_i, x_k),

    \\ell_i = \\max(0, d^+_i - d^-_i + m) \\quad\\text{or, with a soft margin,}\\quad
    \\ell_i = \\log(1 + \\exp(d^+_i - d^-_i)).

``d`` is any :class:`~reidkit.distances.Distance`; for a similarity (larger is closer) the
hardest positive is the least similar and the hardest negative the most similar, and ``d`` is
the negated similarity.

Anchors without a positive (an identity seen once) or without a negative (a batch of one
identity) have no triplet: they are left out of the mean. An empty batch has no anchor and
gives 0, still attached to the graph, as every :class:`~reidkit.losses.base.ReductionLoss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reidkit import checks
from reidkit.distances import Distance, EuclideanDistance, get_distance
from reidkit.losses.base import ReductionLoss

# A floor on the squared distance keeps the root's gradient finite where two features coincide.
_EUCLIDEAN = EuclideanDistance(min_squared=1e-12)


class TripletLoss(ReductionLoss):
    """Batch-hard triplet loss with a margin or a soft margin.

    Args:
        margin: ``m`` > 0 for the hinge; ``None`` for the soft margin ``softplus``.
        distance: a :class:`~reidkit.distances.Distance` or its name (see
            :func:`~reidkit.distances.get_distance`); ``"euclidean"`` is
            ``EuclideanDistance(min_squared=1e-12)``, ``"cosine"`` is ``1 - cos``.
        normalize: L2-normalise the features before the distances.
        reduction: ``"mean"`` (over anchors with a triplet), ``"sum"`` or ``"none"``.
    """

    def __init__(
        self,
        margin: float | None = 0.3,
        distance: str | Distance = "euclidean",
        normalize: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        checks.check_number("margin", margin, above=0, optional=True)
        self.margin = margin
        self.distance = _EUCLIDEAN if distance == "euclidean" else get_distance(distance)
        self.normalize = normalize

    def hardest(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Hardest-positive and hardest-negative distances of every anchor.

        Args:
            features: ``(N, D)``, ``N >= 0``.
            labels: ``(N,)`` identities.

        Returns:
            ``d_pos`` ``(N,)``, ``d_neg`` ``(N,)`` and ``valid`` ``(N,)``, true where the anchor
            has both a positive and a negative (the distances of other rows are meaningless).
            For a similarity, ``d`` is the negated similarity.
        """
        checks.check_float_matrix("features", features)
        checks.check_labels("labels", labels, features.shape[0])
        if self.normalize:
            features = F.normalize(features, dim=-1)
        distances = self.distance.pairwise(features, features)
        if self.distance.is_inverted:
            distances = -distances
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        positive = same & ~eye
        negative = ~same
        if len(labels) == 0:  # no row to reduce over: empty results, still on the graph
            empty = distances.sum(dim=1)
            return empty, empty, positive.any(dim=1)
        far = torch.finfo(distances.dtype).max
        d_pos = distances.masked_fill(~positive, -far).amax(dim=1)
        d_neg = distances.masked_fill(~negative, far).amin(dim=1)
        return d_pos, d_neg, positive.any(dim=1) & negative.any(dim=1)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Loss of ``features`` ``(N, D)`` with identities ``labels`` ``(N,)``.

        Returns:
            The reduced loss; ``(N,)`` with ``reduction="none"``. With no valid anchor (an
            empty batch included) the mean and the sum are 0, attached to the graph.
        """
        d_pos, d_neg, valid = self.hardest(features, labels)
        gap = (d_pos - d_neg).where(valid, d_pos.new_zeros(()))
        losses = F.softplus(gap) if self.margin is None else F.relu(gap + self.margin)
        return self.reduce(losses, valid)

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, distance={self.distance}, normalize={self.normalize}, "
            f"{super().extra_repr()}"
        )
