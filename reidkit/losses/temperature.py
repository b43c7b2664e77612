"""The temperature of a softmax over similarities, fixed or learned.

A contrastive loss divides its similarities by a temperature ``τ`` (multiplies them by the
logit scale ``1/τ``). CLIP and VAL-PAT (``τ'`` of eq. 2, "learned together with all other
parameters", initialised at 0.07) learn it; MoCo and VAL-PAT's ``τ`` of eq. 1 fix it; UniPT's
eq. 1 has none (``τ = 1``). A learned scale is parametrised by its logarithm, as CLIP does,
and capped at ``max_scale`` (CLIP: 100) so that it cannot grow without bound.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from reidkit import checks


class Temperature(nn.Module):
    """``1/τ``, a number or a learned scalar.

    Args:
        initial: ``τ`` (> 0), the value of a fixed temperature or the start of a learned one.
        learnable: learn ``log(1/τ)`` (a parameter of this module).
        max_scale: the largest logit scale ``1/τ`` a learned temperature may reach; the
            gradient stops at the cap.
    """

    def __init__(
        self, initial: float = 0.07, learnable: bool = False, max_scale: float = 100.0
    ) -> None:
        super().__init__()
        checks.check_number("temperature", initial, above=0, finite=True)
        checks.check_number("max_scale", max_scale, above=0, finite=True)
        if 1.0 / initial > max_scale:
            raise ValueError(
                f"temperature must be >= 1 / max_scale = {1.0 / max_scale}, got {initial}"
            )
        self.initial = float(initial)
        self.learnable = learnable
        self.max_scale = float(max_scale)
        self.log_scale: nn.Parameter | None = None
        if learnable:
            self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / initial)))

    def scale(self) -> Tensor | float:
        """The logit scale ``1/τ``: a one-element tensor when learned, a float otherwise."""
        if self.log_scale is None:
            return 1.0 / self.initial
        return self.log_scale.clamp(max=math.log(self.max_scale)).exp()

    def value(self) -> float:
        """The current ``τ`` as a number (for logs)."""
        scale = self.scale()
        return 1.0 / float(scale.detach() if isinstance(scale, Tensor) else scale)

    def extra_repr(self) -> str:
        return f"initial={self.initial}, learnable={self.learnable}, max_scale={self.max_scale}"
