"""Optimisation steps and the epoch loop around a user's step function.

A *step function* takes one batch and returns the loss to minimise, either as a scalar tensor
or as a mapping with a ``"loss"`` entry and any other scalars to report::

    def step(batch):
        images, pids = move_to_device(batch[:2], device)
        logits, features = model(images)
        id_loss, tri_loss = ce(logits, pids), triplet(features, pids)
        return {"loss": id_loss + tri_loss, "id": id_loss, "triplet": tri_loss}

:class:`Trainer` runs it under autocast when AMP is on, back-propagates (through a gradient
scaler on CUDA), clips the gradient norm if asked, steps every optimiser, and averages the
reported scalars over the epoch. A step whose loss is NaN or infinite (on any rank) is skipped
and counted, unless ``skip_nonfinite=False``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from reidkit.distributed import all_reduce_mean
from reidkit.engine.meters import MetricTracker
from reidkit.engine.progress import LOGGER_NAME, format_metrics, progress_bar

StepOutput = Tensor | Mapping[str, Tensor | float]
StepFunction = Callable[[Any], StepOutput]


def move_to_device(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor (inside tuples, lists and dicts) moved to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch


def _split_step_output(output: StepOutput) -> tuple[Tensor, dict[str, Tensor | float]]:
    if isinstance(output, Tensor):
        loss, metrics = output, {}
    elif isinstance(output, Mapping) and isinstance(output.get("loss"), Tensor):
        loss, metrics = (
            cast(Tensor, output["loss"]),
            {k: v for k, v in output.items() if k != "loss"},
        )
    else:
        raise ValueError(
            "the step function must return a scalar loss tensor or a mapping with a 'loss' tensor"
        )
    if loss.numel() != 1:
        raise ValueError(f"the loss must be a scalar, got shape {tuple(loss.shape)}")
    return loss.reshape(()), metrics


class Trainer:
    """Optimisers, schedulers and AMP state of one training stage.

    Args:
        optimizers: one optimiser or several (e.g. MMPL's prompt and agent optimisers); all are
            stepped on the same loss, so each should own a disjoint set of parameters. Give
            several as a mapping ``{"prompts": ..., "agents": ...}`` to have their learning
            rates logged by name (``lr_prompts``, ``lr_agents``).
        schedulers: learning-rate schedulers, stepped once per epoch by :meth:`end_epoch`, or
            after every step taken when their ``interval`` attribute is ``"step"``
            (:class:`~reidkit.engine.WarmupLinearLR`).
        amp: run the step function under :func:`torch.autocast` (float16 with a gradient
            scaler on CUDA, bfloat16 on the CPU).
        grad_clip_norm: clip the total gradient norm of all optimised parameters to this value
            (``None``: no clipping).
        device: device of the computation (selects the autocast type).
        skip_nonfinite: skip a step whose loss is NaN or infinite on any rank: no backward, no
            optimiser step, no scaler update, gradients zeroed; it is logged as a warning and
            counted (:attr:`skipped_steps`, and ``skipped_steps`` in the epoch metrics). This
            reads the loss on the host, one device synchronisation per step. ``False``: no
            check, and a non-finite loss reaches the optimisers.

    Attributes:
        skipped_steps: steps skipped for a non-finite loss since the trainer was built.
    """

    def __init__(
        self,
        optimizers: Optimizer | Sequence[Optimizer] | Mapping[str, Optimizer],
        schedulers: LRScheduler | Sequence[LRScheduler] = (),
        *,
        amp: bool = False,
        grad_clip_norm: float | None = None,
        device: torch.device | str = "cpu",
        skip_nonfinite: bool = True,
    ) -> None:
        if isinstance(optimizers, Optimizer):
            optimizers = [optimizers]
        if isinstance(optimizers, Mapping):
            names = [str(name) for name in optimizers]
            optimizers = list(optimizers.values())
        else:
            optimizers = list(optimizers)
            names = [str(index) for index in range(len(optimizers))]
        self.optimizers: list[Optimizer] = optimizers
        if not self.optimizers or not all(isinstance(o, Optimizer) for o in self.optimizers):
            raise ValueError(
                "optimizers must be a torch Optimizer, or a non-empty list or mapping of them"
            )
        self.optimizer_names = names
        self.schedulers = [schedulers] if isinstance(schedulers, LRScheduler) else list(schedulers)
        if grad_clip_norm is not None and not grad_clip_norm > 0:
            raise ValueError(f"grad_clip_norm must be None or > 0, got {grad_clip_norm!r}")
        self.device = torch.device(device)
        self.amp = amp
        self.grad_clip_norm = grad_clip_norm
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=amp and self.device.type == "cuda"
        )
        self.skip_nonfinite = skip_nonfinite
        self.skipped_steps = 0

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """The autocast context of the forward pass (a no-op context without AMP)."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def parameters(self) -> list[Tensor]:
        """Every parameter the optimisers update."""
        return [p for o in self.optimizers for group in o.param_groups for p in group["params"]]

    def learning_rates(self) -> dict[str, float]:
        """Current learning rate of each optimiser's first group: ``lr`` for a single one,
        ``lr_<name>`` for optimisers given by name (``lr_prompts``), else ``lr``, ``lr_1``,
        ... in order."""
        if len(self.optimizers) == 1:
            return {"lr": float(self.optimizers[0].param_groups[0]["lr"])}
        return {
            ("lr" if name == "0" else f"lr_{name}"): float(o.param_groups[0]["lr"])
            for name, o in zip(self.optimizer_names, self.optimizers)
        }

    def _loss_is_nonfinite(self, loss: Tensor) -> bool:
        """Whether ``loss`` is NaN or infinite on this rank or any other (collective)."""
        nonfinite = (~torch.isfinite(loss.detach())).float().reshape(1)
        return bool(all_reduce_mean(nonfinite).item() > 0)

    def optimize(self, loss: Tensor) -> bool:
        """Back-propagate ``loss`` and step every optimiser (gradients are zeroed first).

        Returns:
            ``False`` when the step was skipped for a non-finite loss (see ``skip_nonfinite``;
            every rank decides alike, so that they stay in step), else ``True``.
        """
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        if self.skip_nonfinite and self._loss_is_nonfinite(loss):
            self.skipped_steps += 1
            return False
        self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]  # unannotated in torch
        if self.grad_clip_norm is not None:
            for optimizer in self.optimizers:
                self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.grad_clip_norm)
        for optimizer in self.optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()
        return True

    def run_epoch(
        self, batches: Iterable[Any], step: StepFunction, *, desc: str = "train"
    ) -> dict[str, float]:
        """One pass over ``batches``: forward with ``step``, then :meth:`optimize`.

        Returns:
            The epoch averages of ``loss`` and of every other scalar the step reported
            (averaged over ranks under ``torch.distributed``) over the steps taken, the
            learning rates the epoch ran at, and ``skipped_steps``, the number of steps
            skipped for a non-finite loss (see ``skip_nonfinite``).
        """
        rates = self.learning_rates()
        tracker = MetricTracker()
        skipped = 0
        bar = progress_bar(batches, desc=desc)
        for index, batch in enumerate(bar):
            with self.autocast():
                loss, metrics = _split_step_output(step(batch))
            if not self.optimize(loss):
                skipped += 1
                logging.getLogger(LOGGER_NAME).warning(
                    "[%s] step %d skipped: non-finite loss (%s on this rank)",
                    desc,
                    index + 1,
                    float(loss.detach()),
                )
                continue
            for scheduler in self._schedulers("step"):
                scheduler.step()
            tracker.update({"loss": loss.detach(), **metrics})
            if index % 10 == 0 and bar.drawn:  # the averages read the device: only for a bar
                bar.set_postfix_str(format_metrics(tracker.averages()))
        return {**tracker.averages(across_ranks=True), **rates, "skipped_steps": skipped}

    def end_epoch(self) -> None:
        """Step every per-epoch scheduler (call once after each epoch)."""
        for scheduler in self._schedulers("epoch"):
            scheduler.step()

    def _schedulers(self, interval: str) -> list[LRScheduler]:
        return [s for s in self.schedulers if getattr(s, "interval", "epoch") == interval]

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, scheduler and scaler states, for checkpoints."""
        return {
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (same number of optimisers and schedulers)."""
        optimizers, schedulers = state_dict["optimizers"], state_dict["schedulers"]
        if len(optimizers) != len(self.optimizers) or len(schedulers) != len(self.schedulers):
            raise ValueError(
                f"state_dict holds {len(optimizers)} optimisers and {len(schedulers)} schedulers;"
                f" this trainer has {len(self.optimizers)} and {len(self.schedulers)}"
            )
        for optimizer, state in zip(self.optimizers, optimizers):
            optimizer.load_state_dict(state)
        for scheduler, state in zip(self.schedulers, schedulers):
            scheduler.load_state_dict(state)
        if state_dict["scaler"]:
            self.scaler.load_state_dict(state_dict["scaler"])
