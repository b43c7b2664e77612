"""Running averages of the scalars a training step reports."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from reidkit.distributed import all_reduce_mean


class MetricTracker:
    """Accumulates per-step scalars (tensors are kept on their device: no sync per step).

    Example::

        tracker = MetricTracker()
        tracker.update({"loss": loss.detach(), "acc": acc})
        tracker.averages()          # {"loss": ..., "acc": ...}
    """

    def __init__(self) -> None:
        self._sums: dict[str, Tensor | float] = {}
        self._counts: dict[str, int] = {}

    def update(self, metrics: Mapping[str, Tensor | float]) -> None:
        """Add one step's values; tensors must hold a single element."""
        for name, value in metrics.items():
            if isinstance(value, Tensor):
                if value.numel() != 1:
                    raise ValueError(
                        f"metric {name!r} must be a scalar, got shape {tuple(value.shape)}"
                    )
                value = value.detach().float().reshape(())
            self._sums[name] = self._sums.get(name, 0.0) + value
            self._counts[name] = self._counts.get(name, 0) + 1

    def averages(self, *, across_ranks: bool = False) -> dict[str, float]:
        """Mean of every metric since construction or :meth:`reset`.

        Args:
            across_ranks: also average over the ranks of ``torch.distributed`` (collective:
                every rank must call it with the same metric names in the same order).
        """
        names = list(self._sums)
        if not names:
            return {}
        values = torch.stack(
            [
                torch.as_tensor(self._sums[n], dtype=torch.float64).cpu() / self._counts[n]
                for n in names
            ]
        )
        if across_ranks:
            values = all_reduce_mean(values)
        return {name: float(value) for name, value in zip(names, values)}

    def reset(self) -> None:
        """Forget every value."""
        self._sums.clear()
        self._counts.clear()
