"""Argument checks and conversions shared by the evaluation entry points.

Evaluation accepts numpy arrays, torch tensors or (nested) lists of numbers. Every check raises
:class:`ValueError` naming the argument and the expected shape, so a transposed distance matrix
or a label vector of the wrong length fails at the call instead of producing a plausible but
wrong score.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray | list

METRICS = ("cosine", "euclidean", "sqeuclidean")


def as_matrix(name: str, values: ArrayLike) -> Tensor:
    """``values`` as a floating ``(M, N)`` tensor without copying (numpy shares its memory).

    Half-precision tensors are kept as they are; callers convert chunk by chunk.
    """
    tensor = _as_tensor(name, values)
    if tensor.dim() != 2:
        raise ValueError(f"{name} must have shape (M, N), got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must hold floating-point values, got dtype {tensor.dtype}")
    return tensor


def as_labels(name: str, values: ArrayLike, length: int, device: torch.device) -> Tensor:
    """``values`` as an int64 ``(length,)`` tensor on ``device``."""
    tensor = _as_tensor(name, values)
    if tensor.dim() != 1 or tensor.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers, got dtype {tensor.dtype}")
    return tensor.to(device=device, dtype=torch.int64)


def check_positive_int(name: str, value: int, minimum: int = 1) -> None:
    """Raise unless ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_metric(metric: str) -> None:
    """Raise unless ``metric`` is one of :data:`METRICS`."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def check_finite(name: str, values: Tensor) -> None:
    """Raise if ``values`` holds NaN or infinity."""
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} must be finite; found NaN or inf")


def _as_tensor(name: str, values: ArrayLike) -> Tensor:
    if isinstance(values, Tensor):
        return values.detach()
    if isinstance(values, (list, tuple)):
        values = np.asarray(values)
    if isinstance(values, np.ndarray) and values.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(values))
    raise ValueError(
        f"{name} must be a numpy array, a torch tensor or a list of numbers, "
        f"got {type(values).__name__}"
    )
