"""Optimiser parameter groups: a separate learning rate for biases, or one per submodule."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


def module_parameter_groups(
    model: nn.Module, rates: Mapping[str, float], default_lr: float
) -> list[dict[str, Any]]:
    """One optimiser group per named submodule, at its own learning rate.

    UniPT fine-tunes its pre-trained text encoder at ``1e-5`` and the visual encoder at
    ``1e-4`` (sec. 5.2): ``module_parameter_groups(model, {"text_encoder": 1e-5},
    default_lr=1e-4)``. Each trainable parameter of ``model`` goes to the group of the longest
    prefix of its name in ``rates`` (a submodule's dotted name), the others to a ``"default"``
    group; a parameter shared by several submodules is listed once (under its first name).

    Args:
        model: the module whose trainable parameters to optimise.
        rates: submodule name to learning rate, e.g. ``{"text_encoder": 1e-5}``.
        default_lr: the rate of every other parameter.

    Returns:
        ``[{"name": prefix, "params": [...], "lr": rate}, ..., {"name": "default", ...}]``, in
        the order of ``rates``, without the empty default group.

    Raises:
        ValueError: a rate that is not positive, or a name in ``rates`` that holds no
            trainable parameter (a typo would otherwise leave its rate unused).
    """
    for name, lr in {**rates, "default_lr": default_lr}.items():
        if not lr > 0:
            raise ValueError(f"learning rates must be positive, got {lr!r} for {name!r}")
    groups: dict[str, list[nn.Parameter]] = {prefix: [] for prefix in rates}
    rest: list[nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        owners = [p for p in rates if name == p or name.startswith(p + ".")]
        (groups[max(owners, key=len)] if owners else rest).append(parameter)
    empty = [prefix for prefix, parameters in groups.items() if not parameters]
    if empty:
        raise ValueError(f"rates name submodules without trainable parameters: {empty}")
    result = [{"name": prefix, "params": groups[prefix], "lr": lr} for prefix, lr in rates.items()]
    if rest:
        result.append({"name": "default", "params": rest, "lr": default_lr})
    return result
