"""Fused Triton kernels for Sinkhorn. Triton is imported lazily, only when a kernel runs.

The kernels, their launchers and the feature-level autograd function live in
:mod:`reidkit.kernels.sinkhorn_kernels`, which imports Triton; this module only says whether
they apply.

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

__all__ = [
    "MAX_TILE",
    "MAX_TOKENS",
    "MIN_DOT_BLOCK",
    "padded_block",
    "triton_available",
    "triton_supports",
    "triton_supports_pairwise",
]

MAX_TILE = 4096  # entries of one problem's cost tile, each side padded to a power of two
MAX_TOKENS = 32  # columns (N) of a feature-level problem: its N x N solve runs on chip
MIN_DOT_BLOCK = 16  # tl.dot needs blocks >= 16: the feature-level kernels pad to it
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.cache
def triton_available() -> bool:
    """Whether Triton can be imported (on the CPU it runs only with ``TRITON_INTERPRET=1``)."""
    return importlib.util.find_spec("triton") is not None


def _runs_on(tensor: Tensor) -> bool:
    return tensor.is_cuda or (tensor.device.type == "cpu" and _interpreted())


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def padded_block(size: int, minimum: int = 1) -> int:
    """The block a kernel uses for a side of ``size``: a power of two, at least ``minimum``."""
    return max(minimum, 1 << (size - 1).bit_length())


def triton_supports(cost: Tensor) -> bool:
    """Whether the fused Sinkhorn kernel handles a flat ``(B, M, N)`` cost.

    Needs the cost tile, each side padded to a power of two, to hold at most
    :data:`MAX_TILE` = 4096 entries (e.g. ``M <= 128`` with ``N <= 32``, or AAformer's
    ``5 x 128``), a float32/float16/bfloat16 cost on a CUDA device (or on the CPU under
    ``TRITON_INTERPRET=1``).
    """
    return (
        cost.dim() == 3
        and padded_block(cost.shape[1]) * padded_block(cost.shape[2]) <= MAX_TILE
        and cost.dtype in _KERNEL_DTYPES
        and _runs_on(cost)
    )


def triton_supports_pairwise(x: Tensor, y: Tensor) -> bool:
    """Whether the fused feature-level kernels handle ``x`` (B, M, D) and ``y`` (L, N, D).

    Needs ``N <= 32`` (:data:`MAX_TOKENS`), the ``M x N`` tile padded to powers of two of at
    least 16 within :data:`MAX_TILE` (``M <= 128`` with ``N <= 32``, ``M <= 256`` with
    ``N <= 16``), ``x`` and ``y`` of one float32/float16/bfloat16 dtype on one CUDA device (or
    on the CPU under ``TRITON_INTERPRET=1``).
    """
    return (
        x.dim() == 3
        and y.dim() == 3
        and y.shape[1] <= MAX_TOKENS
        and padded_block(x.shape[1], MIN_DOT_BLOCK) * padded_block(y.shape[1], MIN_DOT_BLOCK)
        <= MAX_TILE
        and x.dtype in _KERNEL_DTYPES
        and y.dtype == x.dtype
        and x.device == y.device
        and _runs_on(x)
    )
