"""Devices, dtypes, markers and random inputs shared by the kernel tests."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import settings

from reidkit.kernels import triton_available

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Half-precision inputs are rounded before both sides see them; the kernels compute in fp32.
# bf16 runs on GPUs only: Triton's interpreter computes it wrongly.
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])

KERNEL_MARKS = [
    # Triton is a core dependency; the skip only guards platforms where it has no wheel.
    pytest.mark.skipif(not triton_available(), reason="triton is not installed"),
    # log(0) = -inf marks zero-mass rows and columns; the interpreter's numpy reports it.
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
    # The update rule's u = exp(f / epsilon) overflows on raw logits, in torch as well (both
    # then stop at once); the interpreter's numpy reports it.
    pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning"),
]


def unit_features(seed: int, *shape: int) -> torch.Tensor:
    """Random L2-normalised features of ``shape`` ``(..., D)`` on :data:`DEVICE`."""
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator), dim=-1).to(DEVICE)


def examples(share: float) -> int:
    """A ``share`` of the active hypothesis profile's examples: the interpreter is slow."""
    return max(3, round(share * settings.default.max_examples))
