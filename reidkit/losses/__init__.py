"""Losses of CLIP-based ReID.

* :class:`SupConLoss`: image-text supervised contrastive loss (CLIP-ReID eq. 2-3), gathering
  the other modality's features from every rank with gradients.
* :class:`ImageToTextCrossEntropy`: cross-entropy against all identities' text features (eq. 5).
* :class:`CrossEntropyLabelSmooth`: label-smoothed ID loss.
* :class:`TripletLoss`: batch-hard triplet loss, margin or soft margin, on any
  :class:`~reidkit.distances.Distance`.
* :class:`TransformationLoss`: MMPL's visual-prompt transformation loss (eq. 22-23).
* :class:`PCLLoss`: PCL-CLIP's prototypical contrastive loss against a centroid memory (eq. 4).
* :class:`PCLCLIPLoss`: PCL-CLIP's fine-tuning composition, PCL + ID + triplet weighted
  (Table 1).
* :class:`CLIPReIDLoss`: the stage-2 composition of CLIP-ReID and MMPL: ID on two BNNecks,
  triplet, image-to-text cross-entropy over ``K`` text levels, optional transformation loss.
* :func:`multi_granularity_loss`: a loss against ``K`` levels of text features, averaged
  (MMPL's stage-2 text term).

Text-to-image ReID and multimodal pre-training (UniPT, VAL-PAT):

* :class:`ImageTextContrastiveLoss`: CLIP's symmetric contrastive loss of paired features,
  positives by global index under ``torch.distributed`` (UniPT eq. 1);
* :class:`QueueInfoNCELoss`: MoCo's InfoNCE against a queue of keys (VAL-PAT eq. 1-2);
* :class:`MaskedLanguageModelingLoss`: cross-entropy at the masked tokens (UniPT eq. 2);
* :class:`CrossModalRankingLoss`: bidirectional ranking loss, semi-hard or hardest negatives
  (UniPT eq. 5);
* :class:`CrossModalIdentityLoss`: ID loss of both modalities through a shared classifier
  (UniPT eq. 4);
* :class:`AttributeBCELoss` and :func:`attribute_imbalance_weights`: weighted multi-attribute
  binary cross-entropy, hard or soft targets (VAL-PAT eq. 3-4);
* :class:`UniPTPretrainingLoss` (eq. 3), :class:`UniPTFinetuningLoss` (eq. 7) and
  :class:`VALPATLoss` (VAL-PAT eq. 5), the papers' objectives with their weights.

The losses derive from :class:`~reidkit.losses.base.ReductionLoss` (``reduction="mean"``,
``"sum"`` or ``"none"``, anchors without a defined loss left out of the mean); the two that
classify against features (:class:`ImageToTextCrossEntropy`, :class:`PCLLoss`) hold a
:class:`CrossEntropyLabelSmooth`. Their geometry comes from :mod:`reidkit.distances`, the
BNNeck head from :mod:`reidkit.heads`.
"""

from reidkit._deprecation import moved_names
from reidkit.losses.attributes import AttributeBCELoss, attribute_imbalance_weights
from reidkit.losses.base import ObjectiveOutput, ReductionLoss
from reidkit.losses.clip_reid import CLIPReIDLoss, CLIPReIDLossOutput
from reidkit.losses.contrastive import ImageTextContrastiveLoss
from reidkit.losses.identity import CrossModalIdentityLoss
from reidkit.losses.label_smoothing import CrossEntropyLabelSmooth
from reidkit.losses.mlm import MaskedLanguageModelingLoss
from reidkit.losses.multi_granularity import multi_granularity_loss
from reidkit.losses.pcl import PCLLoss
from reidkit.losses.pcl_clip import PCLCLIPLoss
from reidkit.losses.queue_contrastive import QueueInfoNCELoss
from reidkit.losses.ranking import CrossModalRankingLoss
from reidkit.losses.supcon import SupConLoss
from reidkit.losses.temperature import Temperature
from reidkit.losses.text_cross_entropy import ImageToTextCrossEntropy
from reidkit.losses.transformation import TransformationLoss
from reidkit.losses.triplet import TripletLoss
from reidkit.losses.unipt import UnifiedFeatures, UniPTFinetuningLoss, UniPTPretrainingLoss
from reidkit.losses.valpat import VALPATBatch, VALPATLoss

__all__ = [
    "AttributeBCELoss",
    "CLIPReIDLoss",
    "CLIPReIDLossOutput",
    "CrossEntropyLabelSmooth",
    "CrossModalIdentityLoss",
    "CrossModalRankingLoss",
    "ImageTextContrastiveLoss",
    "ImageToTextCrossEntropy",
    "MaskedLanguageModelingLoss",
    "ObjectiveOutput",
    "PCLCLIPLoss",
    "PCLLoss",
    "QueueInfoNCELoss",
    "ReductionLoss",
    "SupConLoss",
    "Temperature",
    "TransformationLoss",
    "TripletLoss",
    "UniPTFinetuningLoss",
    "UniPTPretrainingLoss",
    "UnifiedFeatures",
    "VALPATBatch",
    "VALPATLoss",
    "attribute_imbalance_weights",
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
