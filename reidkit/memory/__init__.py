"""Memory of class centroids and the unsupervised tools of PCL-CLIP (sec. 4).

* :class:`PrototypeMemory`: one L2-normalised centroid per class or cluster, initialised from
  the class means and updated with momentum (eq. 5); the targets of
  :class:`~reidkit.losses.PCLLoss` (eq. 4).
* :func:`cluster_pseudo_labels`: DBSCAN on the k-reciprocal Jaccard distance, the pseudo
  labels of unsupervised training (sec. 4.2).
* :func:`freeze_patch_projection`: keeps the ViT patch projection at its pre-trained weights,
  the divergence fix of sec. 4.2.
"""

from reidkit.memory.clustering import cluster_pseudo_labels
from reidkit.memory.patch_projection import freeze_patch_projection
from reidkit.memory.prototype import PrototypeMemory

__all__ = [
    "PrototypeMemory",
    "cluster_pseudo_labels",
    "freeze_patch_projection",
]
