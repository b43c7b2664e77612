"""Deprecated: k-reciprocal re-ranking lives in :mod:`reidkit.retrieval`."""

from reidkit._deprecation import moved_names

__getattr__ = moved_names(
    __name__,
    {
        name: f"reidkit.retrieval.reranking.{name}"
        for name in (
            "DistanceRows",
            "SparseRows",
            "jaccard_rows",
            "k_reciprocal_features",
            "k_reciprocal_jaccard_distance",
            "re_ranking",
            "rerank_from_rows",
        )
    },
)
