"""Fused Triton kernels for Sinkhorn. Triton is imported lazily, only when a kernel runs.

The kernels and their launchers live in :mod:`reidkit.kernels.sinkhorn_kernels`, which imports
Triton; this module only says whether they apply.

:func:`reidkit.sinkhorn` and :func:`reidkit.pairwise_ot_distance` call these entries on CUDA
tensors (``backend="auto"``) when the shape fits on chip; the plain-torch solvers of
:mod:`reidkit.ot` are the reference and the fallback. On a machine without CUDA the kernels run
on CPU tensors in Triton's interpreter when ``TRITON_INTERPRET=1`` was set before Triton was
imported (slow; for tests).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
from torch import Tensor

MAX_ROWS = 128  # rows (M) of one problem kept on chip
MAX_COLS = 32  # columns (N) of one problem kept on chip
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.cache
def triton_available() -> bool:
    """Whether Triton can be imported (on the CPU it runs only with ``TRITON_INTERPRET=1``)."""
    return importlib.util.find_spec("triton") is not None


def _runs_on(tensor: Tensor) -> bool:
    return tensor.is_cuda or (tensor.device.type == "cpu" and _interpreted())


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_supports(cost: Tensor) -> bool:
    """Whether the fused Sinkhorn kernel handles a flat ``(B, M, N)`` cost.

    Needs ``M <= 128``, ``N <= 32``, a float32/float16/bfloat16 cost on a CUDA device (or on
    the CPU under ``TRITON_INTERPRET=1``).
    """
    return (
        cost.dim() == 3
        and cost.shape[1] <= MAX_ROWS
        and cost.shape[2] <= MAX_COLS
        and cost.dtype in _KERNEL_DTYPES
        and _runs_on(cost)
    )


def triton_supports_pairwise(x: Tensor, y: Tensor) -> bool:
    """Whether the fused feature-level kernel handles ``x`` (B, M, D) and ``y`` (L, N, D)."""
    return (
        x.shape[1] <= MAX_ROWS
        and y.shape[1] <= MAX_COLS
        and x.dtype in _KERNEL_DTYPES
        and y.dtype == x.dtype
        and x.device == y.device
        and _runs_on(x)
    )
