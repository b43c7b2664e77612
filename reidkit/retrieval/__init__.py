"""Retrieval maths used in training and in evaluation: features and neighbourhoods.

* :func:`extract_features`: a model's features over a loader, with flip averaging;
* :func:`k_reciprocal_jaccard_distance`: the Jaccard distance of k-reciprocal neighbour sets
  (the clustering distance of unsupervised ReID);
* :func:`re_ranking`: k-reciprocal re-ranking of query-gallery distances.

The pairwise distances themselves are :mod:`reidkit.distances`; the evaluation protocol (rank
metrics, evaluators, figures) is :mod:`reidkit.eval`, which builds on this package.
"""

from reidkit.retrieval.features import ExtractedFeatures, extract_features
from reidkit.retrieval.reranking import k_reciprocal_jaccard_distance, re_ranking

__all__ = [
    "ExtractedFeatures",
    "extract_features",
    "k_reciprocal_jaccard_distance",
    "re_ranking",
]
