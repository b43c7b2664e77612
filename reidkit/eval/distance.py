"""Deprecated: pairwise distances live in :mod:`reidkit.distances`."""

from __future__ import annotations

import torch
from torch import Tensor

from reidkit._deprecation import moved_names
from reidkit.distances import get_distance


def pairwise_distance_of_evaluation(x: Tensor, y: Tensor, metric: str = "cosine") -> Tensor:
    """The former ``pairwise_distance`` of evaluation: cosine by default, half inputs in float32."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x, y = x.float(), y.float()
    return get_distance(metric, "metric").pairwise(x, y.to(x.dtype))


__getattr__ = moved_names(
    __name__,
    {
        "pairwise_distance": (
            pairwise_distance_of_evaluation,
            "get_distance(metric).pairwise(x, y) from reidkit.distances",
        )
    },
)
