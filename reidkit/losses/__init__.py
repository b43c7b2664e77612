"""Losses and heads of CLIP-based ReID.

* :class:`SupConLoss`: image-text supervised contrastive loss (CLIP-ReID eq. 2-3), gathering
  the other modality's features from every rank with gradients.
* :class:`ImageToTextCrossEntropy`: cross-entropy against all identities' text features (eq. 5).
* :class:`CrossEntropyLabelSmooth`: label-smoothed ID loss.
* :class:`TripletLoss`: batch-hard triplet loss, margin or soft margin.
* :class:`BNNeck`: bias-free BN and classifier between the feature and the ID loss.
* :class:`TransformationLoss`: MMPL's visual-prompt transformation loss (eq. 22-23).
* :class:`PCLLoss`: PCL-CLIP's prototypical contrastive loss against a centroid memory (eq. 4).
* :class:`CLIPReIDLoss`: the stage-2 composition of CLIP-ReID and MMPL: ID on two BNNecks,
  triplet, image-to-text cross-entropy over ``K`` text levels, optional transformation loss.

The losses derive from :class:`~reidkit.losses.base.ReductionLoss` (``reduction="mean"``,
``"sum"`` or ``"none"``, anchors without a defined loss left out of the mean).
"""

from reidkit.losses.base import ReductionLoss
from reidkit.losses.bnneck import BNNeck, BNNeckOutput
from reidkit.losses.clip_reid import CLIPReIDLoss, CLIPReIDLossOutput
from reidkit.losses.label_smoothing import CrossEntropyLabelSmooth
from reidkit.losses.pcl import PCLLoss
from reidkit.losses.similarity import pairwise_distance, similarity_logits
from reidkit.losses.supcon import SupConLoss
from reidkit.losses.text_cross_entropy import ImageToTextCrossEntropy
from reidkit.losses.transformation import TransformationLoss
from reidkit.losses.triplet import TripletLoss

__all__ = [
    "BNNeck",
    "BNNeckOutput",
    "CLIPReIDLoss",
    "CLIPReIDLossOutput",
    "CrossEntropyLabelSmooth",
    "ImageToTextCrossEntropy",
    "PCLLoss",
    "ReductionLoss",
    "SupConLoss",
    "TransformationLoss",
    "TripletLoss",
    "pairwise_distance",
    "similarity_logits",
]
