"""Optimiser parameter groups with a separate learning rate for biases."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn


def bias_parameter_groups(
    modules: nn.Module | Iterable[nn.Module], lr: float, bias_lr_factor: float = 1.0
) -> list[dict[str, Any]]:
    """Two optimiser groups: weights at ``lr``, biases at ``lr * bias_lr_factor``.

    The grouping of the BoT, TransReID and CLIP-ReID code bases (``BIAS_LR_FACTOR = 2``).
    Parameters with ``requires_grad=False`` are left out; a parameter shared by several
    modules is listed once.

    Args:
        modules: a module or several whose trainable parameters to optimise.
        lr: learning rate of the weights.
        bias_lr_factor: multiplier of ``lr`` for parameters whose name ends in ``bias``.

    Returns:
        ``[{"params": weights, "lr": lr}, {"params": biases, "lr": lr * bias_lr_factor}]``.
    """
    if lr <= 0 or bias_lr_factor <= 0:
        raise ValueError(
            f"lr and bias_lr_factor must be positive, got lr={lr}, bias_lr_factor={bias_lr_factor}"
        )
    modules = [modules] if isinstance(modules, nn.Module) else list(modules)
    weights: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in modules:
        for name, parameter in module.named_parameters():
            if parameter.requires_grad and id(parameter) not in seen:
                seen.add(id(parameter))
                (biases if name.endswith("bias") else weights).append(parameter)
    return [
        {"params": weights, "lr": lr},
        {"params": biases, "lr": lr * bias_lr_factor},
    ]
