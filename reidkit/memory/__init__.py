"""What training carries from step to step: centroids, key queues and momentum encoders.

* :class:`PrototypeMemory`: one L2-normalised centroid per class or cluster, initialised from
  the class means and updated with momentum (PCL-CLIP eq. 5); the targets of
  :class:`~reidkit.losses.PCLLoss` (eq. 4).
* :func:`cluster_pseudo_labels`: DBSCAN on the k-reciprocal Jaccard distance, the pseudo
  labels of unsupervised training (PCL-CLIP sec. 4.2); :func:`pseudo_label_agreement`, their
  adjusted Rand index against the true identities.
* :func:`freeze_patch_projection`: keeps the ViT patch projection at its pre-trained weights,
  the divergence fix of PCL-CLIP sec. 4.2.
* :class:`FeatureQueue`: the first-in, first-out queue of keys of MoCo-style contrast,
  gathered across ranks (VAL-PAT eq. 1-2).
* :class:`MomentumEncoder`: an exponential-moving-average copy of a module, MoCo's key encoder
  (VAL-PAT's ``E_k`` and ``W_k``).
"""

from reidkit.memory.clustering import cluster_pseudo_labels, pseudo_label_agreement
from reidkit.memory.momentum import MomentumEncoder
from reidkit.memory.patch_projection import freeze_patch_projection
from reidkit.memory.prototype import PrototypeMemory
from reidkit.memory.queue import FeatureQueue

__all__ = [
    "FeatureQueue",
    "MomentumEncoder",
    "PrototypeMemory",
    "cluster_pseudo_labels",
    "freeze_patch_projection",
    "pseudo_label_agreement",
]
