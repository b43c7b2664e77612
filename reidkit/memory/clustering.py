"""Pseudo labels for unsupervised ReID: DBSCAN on the k-reciprocal Jaccard distance (sec. 4.2).

Clustering-based unsupervised ReID (ClusterContrast, which PCL-CLIP builds on) alternates
between labelling the train set by clustering its features and training with
:class:`~reidkit.losses.PCLLoss` against the cluster centroids. The features are clustered
with DBSCAN on the Jaccard distance of their k-reciprocal neighbour sets (Zhong et al., 2017),
computed by :func:`reidkit.retrieval.k_reciprocal_jaccard_distance`. Samples DBSCAN leaves as noise
get the label ``-1`` and are dropped from the epoch's training.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from reidkit import checks
from reidkit.retrieval import k_reciprocal_jaccard_distance


def cluster_pseudo_labels(
    features: Tensor,
    eps: float = 0.6,
    min_samples: int = 4,
    k1: int = 30,
    k2: int = 6,
) -> Tensor:
    """Cluster ``features`` into pseudo identities.

    Args:
        features: ``(N, d)`` features of the whole train set (L2-normalised here).
        eps: DBSCAN neighbourhood radius on the Jaccard distance, in ``(0, 1]`` (0.6 for
            Market-1501 and 0.7 for MSMT17 in ClusterContrast).
        min_samples: DBSCAN core-point size, >= 1 (the point itself included).
        k1: size of the k-reciprocal neighbour sets, >= 1.
        k2: size of the query expansion neighbourhood, >= 1.

    Returns:
        ``(N,)`` int64 labels on ``features``' device: clusters ``0..C-1`` in DBSCAN's order,
        ``-1`` for outliers.
    """
    if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] < 1:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must be a (N, d) tensor with N >= 1, got {shape}")
    checks.check_number("eps", eps, above=0, at_most=1)
    for name, value in (("min_samples", min_samples), ("k1", k1), ("k2", k2)):
        checks.check_integer(name, value, 1)
    # Imported here: scikit-learn is slow to import and only clustering needs it.
    from sklearn.cluster import DBSCAN

    normalised = torch.nn.functional.normalize(features.detach().float(), dim=1)
    jaccard = k_reciprocal_jaccard_distance(normalised, k1=k1, k2=k2)
    distance = torch.as_tensor(jaccard).cpu().numpy().astype(np.float64, copy=False)
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=1).fit_predict(
        np.clip(distance, 0.0, None)
    )
    return torch.as_tensor(labels, dtype=torch.long, device=features.device)


def pseudo_label_agreement(labels: Tensor, identities: Tensor) -> float:
    """Adjusted Rand index of pseudo labels against the true identities.

    The index counts the pairs of samples on which the two partitions agree (together in
    both, apart in both), corrected for chance: 1 for identical partitions, about 0 for
    independent ones (it can be negative). Every outlier (label ``-1``) counts as a cluster of
    its own, so a clustering that leaves samples out is not rewarded for it.

    Args:
        labels: ``(N,)`` integer pseudo labels, ``-1`` for outliers
            (:func:`cluster_pseudo_labels`).
        identities: ``(N,)`` integer true identities.

    Returns:
        The adjusted Rand index, a float at most 1 (1 when both partitions put every sample
        alone, or together).
    """
    for name, value in (("labels", labels), ("identities", identities)):
        if not isinstance(value, Tensor) or value.dim() != 1 or value.is_floating_point():
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a 1-D integer tensor, got {shape}")
    if labels.shape != identities.shape:
        raise ValueError(
            f"labels and identities must have the same length, got {labels.shape[0]} and "
            f"{identities.shape[0]}"
        )
    from sklearn.metrics import adjusted_rand_score

    labels = labels.detach().cpu().clone()
    outliers = labels < 0
    labels[outliers] = int(labels.max()) + 1 + torch.arange(int(outliers.sum()))
    return float(adjusted_rand_score(identities.detach().cpu().numpy(), labels.numpy()))
