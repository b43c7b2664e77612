"""Pairwise distances between feature sets, the geometry shared by evaluation and re-ranking."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reidkit.eval.validation import check_metric


def pairwise_distance(x: Tensor, y: Tensor, metric: str = "cosine") -> Tensor:
    """``(M, N)`` distances between the rows of ``x`` ``(M, D)`` and ``y`` ``(N, D)``.

    Args:
        x, y: feature matrices with the same ``D``.
        metric: ``"cosine"``: ``1 - cos(x_i, y_j)`` in [0, 2]; ``"euclidean"``:
            ``||x_i - y_j||``; ``"sqeuclidean"``: ``||x_i - y_j||^2``.

    Returns:
        ``(M, N)`` distances in the dtype of ``x`` (float32 for half-precision input).
    """
    check_metric(metric)
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have shapes (M, D) and (N, D), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.dtype in (torch.float16, torch.bfloat16):
        x, y = x.float(), y.float()
    y = y.to(x.dtype)
    if metric == "cosine":
        return 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    squared = (x.square().sum(1)[:, None] + y.square().sum(1)[None, :]).addmm_(x, y.T, alpha=-2)
    squared.clamp_(min=0)
    return squared if metric == "sqeuclidean" else squared.sqrt_()
