"""Losses of CLIP-based ReID.

* :class:`SupConLoss`: image-text supervised contrastive loss (CLIP-ReID eq. 2-3), gathering
  the other modality's features from every rank with gradients.
* :class:`ImageToTextCrossEntropy`: cross-entropy against all identities' text features (eq. 5).
* :class:`CrossEntropyLabelSmooth`: label-smoothed ID loss.
* :class:`TripletLoss`: batch-hard triplet loss, margin or soft margin, on any
  :class:`~reidkit.distances.Distance`.
* :class:`TransformationLoss`: MMPL's visual-prompt transformation loss (eq. 22-23).
* :class:`PCLLoss`: PCL-CLIP's prototypical contrastive loss against a centroid memory (eq. 4).
* :class:`CLIPReIDLoss`: the stage-2 composition of CLIP-ReID and MMPL: ID on two BNNecks,
  triplet, image-to-text cross-entropy over ``K`` text levels, optional transformation loss.
* :func:`multi_granularity_loss`: a loss against ``K`` levels of text features, averaged
  (MMPL's stage-2 text term).

The losses derive from :class:`~reidkit.losses.base.ReductionLoss` (``reduction="mean"``,
``"sum"`` or ``"none"``, anchors without a defined loss left out of the mean); the two that
classify against features (:class:`ImageToTextCrossEntropy`, :class:`PCLLoss`) hold a
:class:`CrossEntropyLabelSmooth`. Their geometry comes from :mod:`reidkit.distances`, the
BNNeck head from :mod:`reidkit.heads`.
"""

from reidkit._deprecation import moved_names
from reidkit.losses.base import ReductionLoss
from reidkit.losses.clip_reid import CLIPReIDLoss, CLIPReIDLossOutput
from reidkit.losses.label_smoothing import CrossEntropyLabelSmooth
from reidkit.losses.multi_granularity import multi_granularity_loss
from reidkit.losses.pcl import PCLLoss
from reidkit.losses.supcon import SupConLoss
from reidkit.losses.text_cross_entropy import ImageToTextCrossEntropy
from reidkit.losses.transformation import TransformationLoss
from reidkit.losses.triplet import TripletLoss

__all__ = [
    "CLIPReIDLoss",
    "CLIPReIDLossOutput",
    "CrossEntropyLabelSmooth",
    "ImageToTextCrossEntropy",
    "PCLLoss",
    "ReductionLoss",
    "SupConLoss",
    "TransformationLoss",
    "TripletLoss",
    "multi_granularity_loss",
]

__getattr__ = moved_names(
    __name__,
    {
        "BNNeck": "reidkit.heads.BNNeck",
        "BNNeckOutput": "reidkit.heads.BNNeckOutput",
        "similarity_logits": "reidkit.distances.similarity_logits",
        "pairwise_distance": (
            "reidkit.losses.similarity.pairwise_distance_of_losses",
            "EuclideanDistance(min_squared=1e-12).pairwise(x, y) or CosineDistance().pairwise "
            "from reidkit.distances",
        ),
    },
)
