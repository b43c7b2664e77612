"""Evaluation: rank metrics, k-reciprocal re-ranking, feature extraction and rank-list figures.

Everything here accepts numpy arrays or torch tensors, works chunk by chunk so that MSMT17-size
problems fit in memory, and imports matplotlib only when a figure is drawn.
"""

from reidkit.eval.evaluator import ReIDEvaluator, evaluate_model
from reidkit.eval.features import ExtractedFeatures, extract_features
from reidkit.eval.rank import RankResult, evaluate_rank
from reidkit.eval.reranking import k_reciprocal_jaccard_distance, re_ranking
from reidkit.eval.t2i import evaluate_t2i
from reidkit.eval.visualize import save_rank_grid

__all__ = [
    "ExtractedFeatures",
    "RankResult",
    "ReIDEvaluator",
    "evaluate_model",
    "evaluate_rank",
    "evaluate_t2i",
    "extract_features",
    "k_reciprocal_jaccard_distance",
    "re_ranking",
    "save_rank_grid",
]
