"""Fused Triton kernels for Sinkhorn. Triton is imported lazily, only when a kernel runs."""

from __future__ import annotations

import functools
import importlib.util

from torch import Tensor


@functools.cache
def triton_available() -> bool:
    """Whether Triton can be imported (on the CPU it runs only with ``TRITON_INTERPRET=1``)."""
    return importlib.util.find_spec("triton") is not None


def triton_supports(cost: Tensor) -> bool:
    """Whether the fused Sinkhorn kernel handles a flat ``(B, M, N)`` cost."""
    return False


def triton_supports_pairwise(x: Tensor, y: Tensor) -> bool:
    """Whether the fused feature-level kernel handles ``x`` (B, M, D) and ``y`` (L, N, D)."""
    return False
