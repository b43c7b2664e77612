"""Deprecated: the losses' geometry lives in :mod:`reidkit.distances`."""

from __future__ import annotations

from functools import partial

from torch import Tensor

from reidkit import checks
from reidkit._deprecation import moved_names
from reidkit.distances import CosineDistance, EuclideanDistance


def pairwise_distance_of_losses(x: Tensor, y: Tensor, metric: str = "euclidean") -> Tensor:
    """The former ``pairwise_distance`` (Euclidean distance floored at 1e-12, or cosine)."""
    checks.check_choice("metric", metric, ("euclidean", "cosine"))
    distance = EuclideanDistance(min_squared=1e-12) if metric == "euclidean" else CosineDistance()
    return distance.pairwise(x, y)


__getattr__ = moved_names(
    __name__,
    {
        "similarity_logits": "reidkit.distances.similarity_logits",
        "check_logit_scale": (
            partial(checks.check_scale, "logit_scale"),
            "reidkit.checks.check_scale('logit_scale', value)",
        ),
        "pairwise_distance": (
            pairwise_distance_of_losses,
            "EuclideanDistance(min_squared=1e-12).pairwise(x, y) or CosineDistance().pairwise "
            "from reidkit.distances",
        ),
        "DISTANCES": (("euclidean", "cosine"), "reidkit.distances.DISTANCE_NAMES"),
    },
)
