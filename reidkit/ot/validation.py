"""The checks of the tensors given to the optimal-transport entry points.

The solver settings are checked once, by :class:`reidkit.ot.SinkhornOptions`; the scalar and
finiteness checks are those of :mod:`reidkit.checks`. What is left here is specific to OT: the
cost (its shape, its finiteness on real entries, ``cost / epsilon`` within the working dtype),
the masks and the marginals. Every check raises :class:`ValueError` naming the argument and
what was expected, so that bad input fails loudly instead of producing NaNs deep inside an
iteration.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reidkit import checks
from reidkit._deprecation import moved_names
from reidkit.ot.options import SinkhornOptions

_MARGINAL_SUM_TOL = 1e-3
# cost / epsilon must stay this far below the largest float of the working dtype: the
# iterations add potentials of the same size to it.
_EXPONENT_HEADROOM = 64.0


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


def check_cost_values(
    cost: Tensor, valid: Tensor | None, epsilon: float, work_dtype: torch.dtype
) -> None:
    """The unmasked entries of ``cost`` must be finite, and ``cost / epsilon`` representable.

    Args:
        cost: ``(..., M, N)`` costs.
        valid: boolean mask of the real entries (broadcastable to ``cost``), or ``None``.
        epsilon: entropic regularisation.
        work_dtype: the dtype the solver computes in (float32 or float64).
    """
    if cost.numel() == 0:
        return
    # One reduction pass: NaN and +-inf of a real entry reach the min or the max.
    low, high = torch.aminmax(cost if valid is None else torch.where(valid, cost, 0.0))
    if not bool(torch.isfinite(low) & torch.isfinite(high)):
        raise ValueError("cost must be finite on every unmasked entry; found NaN or inf")
    largest = max(abs(float(low)), abs(float(high)))
    limit = torch.finfo(work_dtype).max / _EXPONENT_HEADROOM
    if largest / epsilon > limit:
        raise ValueError(
            f"cost / epsilon must stay below {limit:.3g} in magnitude for {work_dtype}, got "
            f"|cost| up to {largest:.3g} with epsilon={epsilon:.3g}: rescale the cost or raise "
            "epsilon"
        )


def broadcast_mask(
    name: str, mask: Tensor | None, shape: torch.Size, device: torch.device
) -> Tensor | None:
    """Broadcast an optional boolean mask (``True`` = real entry) to ``shape``."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        found = f"dtype {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a boolean tensor (True marks real entries), got {found}")
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
        ``(..., K)`` non-negative weights summing to one over the real entries: a user marginal
        whose sum is within ``1e-3`` of one (e.g. rounded to float16) is divided by its sum.
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
    checks.check_finite(name, weights)
    if bool((weights < 0).any()):
        raise ValueError(f"{name} must be non-negative")
    if valid is not None and bool((weights.masked_select(~valid) != 0).any()):
        raise ValueError(f"{name} must be zero on masked entries")
    total = weights.sum(dim=-1)
    if bool(((total - 1).abs() > _MARGINAL_SUM_TOL).any()):
        worst = float((total - 1).abs().max())
        raise ValueError(f"{name} must sum to 1 over its last dimension (off by up to {worst:.3g})")
    return weights / total[..., None]


def _check_solver_options(
    epsilon: float,
    max_iter: int,
    tol: float | None,
    grad: str,
    backend: str,
    stop_rule: str,
    on_nonconvergence: str = "warn",
) -> tuple[float, int, float | None]:
    """The former check of the solver settings, now :class:`reidkit.ot.SinkhornOptions`."""
    options = SinkhornOptions(
        epsilon=epsilon,
        max_iter=max_iter,
        tol=tol,
        grad=grad,  # type: ignore[arg-type]  # checked by SinkhornOptions
        backend=backend,  # type: ignore[arg-type]
        stop_rule=stop_rule,  # type: ignore[arg-type]
        on_nonconvergence=on_nonconvergence,  # type: ignore[arg-type]
    )
    return options.epsilon, options.max_iter, options.tol


__getattr__ = moved_names(
    __name__,
    {
        "check_solver_options": (_check_solver_options, "reidkit.ot.SinkhornOptions"),
        "check_choice": "reidkit.checks.check_choice",
        "check_finite": "reidkit.checks.check_finite",
        "real_number": "reidkit.checks.real_number",
        **{
            name: f"reidkit.ot.options.{name}"
            for name in ("GRAD_MODES", "BACKENDS", "STOP_RULES", "NONCONVERGENCE_ACTIONS")
        },
    },
)
