"""Fused Triton kernels for Sinkhorn. Triton is imported lazily, only when a kernel runs.

One module per kernel family, each with its launcher (they import Triton):

* :mod:`reidkit.kernels.cost_tile`: Sinkhorn on a flat batch of cost matrices;
* :mod:`reidkit.kernels.pairwise_forward`: MMPL distances from features, the cost built on
  chip;
* :mod:`reidkit.kernels.pairwise_backward`: their feature gradients;

with the loop the two forward kernels share in :mod:`reidkit.kernels.sinkhorn_loop` and every
block size, packing and warp count in :mod:`reidkit.kernels.launch` (no Triton), which
:mod:`reidkit.kernels.aot` compiles ahead of time for real GPUs. This module only says whether
the kernels apply.

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

from torch import Tensor

from reidkit.kernels.launch import (
    KERNEL_DTYPES,
    MAX_TILE,
    MAX_TOKENS,
    MIN_DOT_BLOCK,
    cost_tile_fits,
    padded_block,
    pairwise_fits,
)

__all__ = [
    "MAX_TILE",
    "MAX_TOKENS",
    "MIN_DOT_BLOCK",
    "padded_block",
    "triton_available",
    "triton_supports",
    "triton_supports_pairwise",
]


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

    Needs the cost tile, each side padded to a power of two of at least 4, to hold at most
    :data:`MAX_TILE` = 4096 entries (e.g. ``M <= 128`` with ``N <= 32``, or AAformer's
    ``5 x 128``), a float32/float16/bfloat16 cost on a CUDA device (or on the CPU under
    ``TRITON_INTERPRET=1``).
    """
    return (
        cost.dim() == 3
        and cost_tile_fits(cost.shape[1], cost.shape[2])
        and cost.dtype in KERNEL_DTYPES
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
        and pairwise_fits(x.shape[1], y.shape[1])
        and x.dtype in KERNEL_DTYPES
        and y.dtype == x.dtype
        and x.device == y.device
        and _runs_on(x)
    )
