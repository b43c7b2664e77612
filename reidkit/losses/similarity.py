"""Pairwise geometry of the losses: similarity logits and distances between two sets of rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DISTANCES = ("euclidean", "cosine")


def similarity_logits(
    anchors: Tensor,
    targets: Tensor,
    *,
    normalize: bool,
    temperature: float = 1.0,
    logit_scale: Tensor | float | None = None,
) -> Tensor:
    """Logits ``s(a_i, t_j) * scale`` of every anchor against every target.

    Args:
        anchors: ``(N, D)``.
        targets: ``(M, D)``.
        normalize: L2-normalise both sides first (``s`` is the cosine similarity, as printed
            in CLIP-ReID eq. 2-5); otherwise ``s`` is the plain dot product (CLIP-ReID's
            reference code, with ``temperature = 1``).
        temperature: divides the similarities when ``logit_scale`` is ``None``.
        logit_scale: multiplies the similarities instead (e.g. CLIP's ``logit_scale.exp()``,
            which may be a learnable tensor).

    Returns:
        ``(N, M)`` logits.
    """
    check_logit_scale(logit_scale)
    if normalize:
        anchors, targets = F.normalize(anchors, dim=-1), F.normalize(targets, dim=-1)
    similarity = anchors @ targets.transpose(0, 1)
    if logit_scale is not None:
        return similarity * logit_scale
    return similarity / temperature


def check_logit_scale(logit_scale: Tensor | float | None) -> None:
    """``logit_scale`` must be ``None``, a finite number > 0 or a one-element tensor.

    A tensor's value is not read (that would synchronise with the GPU at every step).
    """
    if logit_scale is None:
        return
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1 or not logit_scale.is_floating_point():
            raise ValueError(
                "logit_scale must be a number or a one-element floating-point tensor, got a "
                f"{logit_scale.dtype} tensor of shape {tuple(logit_scale.shape)}"
            )
    elif isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)):
        raise ValueError(
            "logit_scale must be a number or a one-element floating-point tensor, got "
            f"{type(logit_scale).__name__}"
        )
    elif not 0 < logit_scale < float("inf"):
        raise ValueError(f"logit_scale must be finite and > 0, got {logit_scale!r}")


def pairwise_distance(x: Tensor, y: Tensor, metric: str = "euclidean") -> Tensor:
    """Distances between the rows of ``x`` ``(N, D)`` and of ``y`` ``(M, D)``: ``(N, M)``.

    ``"euclidean"``: ``sqrt(max(|x|^2 + |y|^2 - 2 x.y, 1e-12))`` (the clamp keeps the gradient
    finite where two rows coincide); ``"cosine"``: ``1 - cos(x, y)``.
    """
    if metric not in DISTANCES:
        raise ValueError(f"metric must be one of {DISTANCES}, got {metric!r}")
    if metric == "cosine":
        return 1.0 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).transpose(0, 1)
    squared = (
        x.pow(2).sum(-1, keepdim=True) + y.pow(2).sum(-1).unsqueeze(0) - 2.0 * x @ y.transpose(0, 1)
    )
    return torch.sqrt(squared.clamp_min(1e-12))
