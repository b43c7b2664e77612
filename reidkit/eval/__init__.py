"""Evaluation protocol: rank metrics, evaluators, text-to-image and attribute metrics, figures.

Everything here accepts numpy arrays or torch tensors, works chunk by chunk so that MSMT17-size
problems fit in memory, and imports matplotlib only when a figure is drawn. Feature extraction
and re-ranking, used in training too, live in :mod:`reidkit.retrieval`.
"""

from reidkit._deprecation import moved_names
from reidkit.eval.attributes import AttributeResult, evaluate_attributes
from reidkit.eval.chance import chance_rank_result
from reidkit.eval.evaluator import ReIDEvaluator, evaluate_model
from reidkit.eval.rank import RankResult, evaluate_rank
from reidkit.eval.t2i import evaluate_t2i, evaluate_t2i_model
from reidkit.eval.visualize import save_rank_grid

__all__ = [
    "AttributeResult",
    "RankResult",
    "ReIDEvaluator",
    "chance_rank_result",
    "evaluate_attributes",
    "evaluate_model",
    "evaluate_rank",
    "evaluate_t2i",
    "evaluate_t2i_model",
    "save_rank_grid",
]

__getattr__ = moved_names(
    __name__,
    {
        "ExtractedFeatures": "reidkit.retrieval.ExtractedFeatures",
        "extract_features": "reidkit.retrieval.extract_features",
        "k_reciprocal_jaccard_distance": "reidkit.retrieval.k_reciprocal_jaccard_distance",
        "re_ranking": "reidkit.retrieval.re_ranking",
    },
)
