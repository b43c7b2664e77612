"""Learning-rate schedules with a linear warm-up: multi-step, cosine and linear decay.

All are :class:`torch.optim.lr_scheduler.LRScheduler` subclasses. :class:`WarmupMultiStepLR`
and :class:`WarmupCosineLR` are stepped once per epoch (call ``scheduler.step()`` after each
epoch); :class:`WarmupLinearLR` once per optimiser step (its :attr:`~WarmupLinearLR.interval`
is ``"step"``, and :class:`~reidkit.engine.Trainer` steps it after every step it takes). With
``e`` the 0-based index of the epoch (or, per step, of the step) about to run, ``W`` the
warm-up length and ``s`` the warm-up start factor, every parameter group runs
at ``base_lr * factor(e)`` where, during the warm-up (``e < W``),

.. math:: \\text{factor}(e) = s + (1 - s)\\,e / W,

so the first epoch runs at ``s * base_lr`` and epoch ``W`` reaches ``base_lr``. Afterwards:

* :class:`WarmupMultiStepLR`: ``factor(e) = gamma ** (number of milestones <= e)``.
  MMPL stage 2: ``base_lr = 5e-6``, ``W = 10``, ``s = 0.1`` (from ``5e-7``),
  ``milestones = (30, 50)``, ``gamma = 0.1``.
* :class:`WarmupCosineLR`: with ``t = (e - W) / (T - W)`` the progress through the remaining
  ``T - W`` epochs, ``factor(e) = m + (1 - m) (1 + cos(pi t)) / 2`` where ``m`` is the final
  factor. AAformer: ``W = 10`` then cosine decay to the end of training.
* :class:`WarmupLinearLR` (per step): ``factor(e) = 1 - (1 - m) t`` with ``t`` as above, over
  the ``T`` steps of the run. UniPT's pre-training: warm-up over the first 10 % of the steps
  (sec. 5.2); VAL-PAT: from ``1e-6`` to ``1e-3`` in 7 epochs, then linearly back to ``1e-6``
  (``s = m = 10^{-3}``, sec. 4.1).
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from reidkit import checks


def _check_warmup(warmup_epochs: int, warmup_start_factor: float) -> None:
    checks.check_integer("warmup_epochs", warmup_epochs, 0)
    checks.check_number("warmup_start_factor", warmup_start_factor, above=0, at_most=1)


class _WarmupScheduler(LRScheduler, ABC):
    """Linear warm-up from ``warmup_start_factor`` to 1; subclasses give the decay after it."""

    interval: ClassVar[str] = "epoch"
    """``"epoch"``: stepped after each epoch; ``"step"``: after each optimiser step."""

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: int,
        warmup_start_factor: float,
        last_epoch: int = -1,
    ) -> None:
        _check_warmup(warmup_epochs, warmup_start_factor)
        self.warmup_epochs = warmup_epochs
        self.warmup_start_factor = warmup_start_factor
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch: int) -> float:
        """The multiplier of the base learning rates at 0-based epoch ``epoch``."""
        if epoch < self.warmup_epochs:
            start = self.warmup_start_factor
            return start + (1.0 - start) * epoch / self.warmup_epochs
        return self.decay_factor(epoch)

    @abstractmethod
    def decay_factor(self, epoch: int) -> float:
        """The multiplier after the warm-up, at 0-based epoch ``epoch``."""

    def get_lr(self) -> list[float | Tensor]:
        factor = self.factor(max(self.last_epoch, 0))
        return [base_lr * factor for base_lr in self.base_lrs]


class WarmupMultiStepLR(_WarmupScheduler):
    """Linear warm-up, then the learning rate times ``gamma`` at each milestone.

    Args:
        optimizer: the wrapped optimiser; its group learning rates are the base rates.
        milestones: increasing 0-based epoch indices from which one more ``gamma`` applies.
        gamma: decay per milestone, in (0, 1].
        warmup_epochs: warm-up length ``W`` (0 disables it).
        warmup_start_factor: ``s``, the fraction of the base rate of the first epoch.
        last_epoch: index of the last epoch run, -1 to start.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        warmup_epochs: int = 10,
        warmup_start_factor: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        milestones = list(milestones)
        if any(b <= a for a, b in itertools.pairwise(milestones)) or any(m < 0 for m in milestones):
            raise ValueError(f"milestones must be increasing integers >= 0, got {milestones!r}")
        checks.check_number("gamma", gamma, above=0, at_most=1)
        self.milestones = milestones
        self.gamma = gamma
        super().__init__(optimizer, warmup_epochs, warmup_start_factor, last_epoch)

    def decay_factor(self, epoch: int) -> float:
        return self.gamma ** bisect_right(self.milestones, epoch)


class WarmupCosineLR(_WarmupScheduler):
    """Linear warm-up, then a half cosine down to ``final_factor`` at epoch ``total_epochs``.

    Args:
        optimizer: the wrapped optimiser; its group learning rates are the base rates.
        total_epochs: ``T``, the number of epochs of the whole schedule (``> warmup_epochs``).
        warmup_epochs: warm-up length ``W`` (0 disables it).
        warmup_start_factor: ``s``, the fraction of the base rate of the first epoch.
        final_factor: ``m``, the fraction of the base rate the cosine reaches at ``T``.
        last_epoch: index of the last epoch run, -1 to start.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_epochs: int,
        warmup_epochs: int = 10,
        warmup_start_factor: float = 0.01,
        final_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        checks.check_integer("total_epochs", total_epochs)
        if isinstance(warmup_epochs, int) and total_epochs <= warmup_epochs:
            raise ValueError(
                f"total_epochs must exceed warmup_epochs={warmup_epochs}, got {total_epochs}"
            )
        checks.check_number("final_factor", final_factor, at_least=0, at_most=1)
        self.total_epochs = total_epochs
        self.final_factor = final_factor
        super().__init__(optimizer, warmup_epochs, warmup_start_factor, last_epoch)

    def decay_factor(self, epoch: int) -> float:
        progress = min((epoch - self.warmup_epochs) / (self.total_epochs - self.warmup_epochs), 1)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.final_factor + (1.0 - self.final_factor) * cosine


class WarmupLinearLR(_WarmupScheduler):
    """Linear warm-up, then a linear decay to ``final_factor`` at ``total_steps``, per step.

    Stepped after every optimiser step (``interval = "step"``): a
    :class:`~reidkit.engine.Trainer` does so, and :meth:`steps_for` gives the total of a run.

    Args:
        optimizer: the wrapped optimiser; its group learning rates are the base rates.
        total_steps: ``T``, the optimiser steps of the whole schedule (``> warmup_steps``).
        warmup_steps: warm-up length ``W`` in steps (0 disables it).
        warmup_start_factor: ``s``, the fraction of the base rate of the first step.
        final_factor: ``m``, the fraction of the base rate reached at step ``T`` (and kept).
        last_epoch: index of the last step taken, -1 to start.
    """

    interval: ClassVar[str] = "step"

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_start_factor: float = 0.01,
        final_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        checks.check_integer("total_steps", total_steps, 1)
        if isinstance(warmup_steps, int) and total_steps <= warmup_steps:
            raise ValueError(
                f"total_steps must exceed warmup_steps={warmup_steps}, got {total_steps}"
            )
        checks.check_number("final_factor", final_factor, at_least=0, at_most=1)
        self.total_steps = total_steps
        self.final_factor = final_factor
        super().__init__(optimizer, warmup_steps, warmup_start_factor, last_epoch)

    @staticmethod
    def steps_for(epochs: int, steps_per_epoch: int, warmup_fraction: float) -> tuple[int, int]:
        """``(total_steps, warmup_steps)`` of ``epochs`` of ``steps_per_epoch``, with the
        warm-up over ``warmup_fraction`` of them (UniPT: 0.1), shortened to leave one step of
        decay."""
        checks.check_number("warmup_fraction", warmup_fraction, at_least=0, below=1)
        total = max(epochs * steps_per_epoch, 1)
        return total, min(round(warmup_fraction * total), total - 1)

    def decay_factor(self, epoch: int) -> float:
        progress = min((epoch - self.warmup_epochs) / (self.total_steps - self.warmup_epochs), 1)
        return 1.0 - (1.0 - self.final_factor) * progress
