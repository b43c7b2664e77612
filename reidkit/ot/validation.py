"""Argument checks shared by the optimal-transport entry points.

Every check raises :class:`ValueError` naming the argument and what was expected, so that bad
input fails loudly instead of producing NaNs deep inside an iteration.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

GRAD_MODES = ("implicit", "envelope", "unrolled")
BACKENDS = ("auto", "torch", "triton")
STOP_RULES = ("marginal", "update")
_MARGINAL_SUM_TOL = 1e-3


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_solver_options(
    epsilon: float, max_iter: int, tol: float | None, grad: str, backend: str, stop_rule: str
) -> None:
    """Validate the scalar options of :func:`reidkit.sinkhorn`."""
    if not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if tol is not None and (not isinstance(tol, (int, float)) or not tol >= 0):
        raise ValueError(f"tol must be None (fixed iterations) or a number >= 0, got {tol!r}")
    check_choice("grad", grad, GRAD_MODES)
    check_choice("backend", backend, BACKENDS)
    check_choice("stop_rule", stop_rule, STOP_RULES)


def check_cost(cost: Tensor) -> None:
    """``cost`` must be a floating tensor of shape ``(..., M, N)`` with ``M, N >= 1``."""
    if not isinstance(cost, Tensor):
        raise ValueError(f"cost must be a torch.Tensor, got {type(cost).__name__}")
    if cost.dim() < 2:
        raise ValueError(f"cost must have shape (..., M, N), got shape {tuple(cost.shape)}")
    if not cost.is_floating_point():
        raise ValueError(f"cost must be a floating-point tensor, got dtype {cost.dtype}")
    if cost.shape[-1] == 0 or cost.shape[-2] == 0:
        raise ValueError(f"cost must have M >= 1 and N >= 1, got shape {tuple(cost.shape)}")


def check_finite(name: str, values: Tensor, valid: Tensor | None = None) -> None:
    """Raise if ``values`` (restricted to ``valid`` entries) holds NaN or infinity."""
    if valid is None:
        # One reduction pass and no boolean temporary: NaN and +-inf reach the min or the max.
        if values.numel() == 0:
            return
        low, high = torch.aminmax(values)
        finite = torch.isfinite(low) & torch.isfinite(high)
    else:
        finite = (torch.isfinite(values) | ~valid).all()
    if not bool(finite):
        raise ValueError(f"{name} must be finite on every unmasked entry; found NaN or inf")


def broadcast_mask(
    name: str, mask: Tensor | None, shape: torch.Size, device: torch.device
) -> Tensor | None:
    """Broadcast an optional boolean mask (``True`` = real entry) to ``shape``."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a boolean tensor (True marks real entries)")
    try:
        mask = mask.to(device).expand(shape)
    except RuntimeError as error:
        raise ValueError(
            f"{name} must broadcast to {tuple(shape)}, got shape {tuple(mask.shape)}"
        ) from error
    if not bool(mask.any(dim=-1).all()):
        raise ValueError(f"{name} must keep at least one real entry in every problem")
    return mask


def marginal(
    name: str, weights: Tensor | None, shape: torch.Size, valid: Tensor | None, like: Tensor
) -> Tensor:
    """Return the marginal ``weights`` broadcast to ``shape``, or the uniform one over ``valid``.

    Args:
        name: argument name used in error messages (``"a"`` or ``"b"``).
        weights: user marginal, broadcastable to ``shape`` ``(..., K)``, or ``None``.
        shape: target shape ``(..., K)``.
        valid: boolean ``(..., K)`` mask of real entries, or ``None``.
        like: tensor whose dtype and device the result takes.

    Returns:
        ``(..., K)`` non-negative weights summing to one over the real entries.
    """
    if weights is None:
        if valid is None:
            return like.new_full(shape, 1.0 / shape[-1])
        counts = valid.sum(dim=-1, keepdim=True).to(like.dtype)
        return valid.to(like.dtype) / counts
    if not isinstance(weights, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or None, got {type(weights).__name__}")
    try:
        weights = weights.to(device=like.device, dtype=like.dtype).expand(shape)
    except RuntimeError as error:
        raise ValueError(
            f"{name} must broadcast to {tuple(shape)}, got shape {tuple(weights.shape)}"
        ) from error
    check_finite(name, weights)
    if bool((weights < 0).any()):
        raise ValueError(f"{name} must be non-negative")
    if valid is not None and bool((weights.masked_select(~valid) != 0).any()):
        raise ValueError(f"{name} must be zero on masked entries")
    total = weights.sum(dim=-1)
    if bool(((total - 1).abs() > _MARGINAL_SUM_TOL).any()):
        worst = float((total - 1).abs().max())
        raise ValueError(f"{name} must sum to 1 over its last dimension (off by up to {worst:.3g})")
    return weights
