"""The signals for results that cannot be taken at face value, and the gradient's safety net.

- **Non-convergence.** :func:`reidkit.sinkhorn` and :func:`reidkit.pairwise_ot_distance` take
  ``on_nonconvergence="ignore" | "warn" | "raise"`` (a field of
  :class:`~reidkit.ot.SinkhornOptions`) for problems that stopped at ``max_iter`` with their
  stop rule unmet (:func:`report_nonconvergence`).
- **Gradient fallback.** The implicit gradient solves a regularised, positive definite system
  (:mod:`reidkit.ot.implicit`) and is finite for every finite input the solver accepts. As a
  safety net, a problem whose implicit gradient is still not finite while its upstream gradient
  is gets the envelope gradient instead (:func:`envelope_fallback`): the plan held constant,
  ``d distance / d cost = plan``. Each such problem is flagged in
  :attr:`reidkit.SinkhornResult.grad_fallback`, counted in :func:`grad_fallback_count`, and
  reported by a :class:`RuntimeWarning` (:func:`report_grad_fallback`).

A warning is attributed to the first caller outside reidkit and torch (for a gradient, the line
that called ``backward``), with a text that does not depend on the data, so that Python's
warning filters show it once per call site (the ``"default"`` action) and can select it by
module or line.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from reidkit._warnings import external_stacklevel

_grad_fallbacks = 0
"""Problems of this process whose implicit gradient was replaced by the envelope gradient."""


def report_nonconvergence(
    converged: Tensor,
    action: str,
    caller: str,
    max_iter: int,
    tol: float | None,
    stop_rule: str,
) -> None:
    """Warn or raise, as ``action`` says, if some problem did not converge.

    Args:
        converged: ``(...)`` bool flags of the problems.
        action: ``"ignore"``, ``"warn"`` (a :class:`RuntimeWarning`) or ``"raise"`` (a
            :class:`RuntimeError`).
        caller: the public function named in the message.
        max_iter, tol, stop_rule: the solver options, quoted in the message.
    """
    if action == "ignore" or converged.numel() == 0:
        return
    missed = int((~converged).sum())
    if missed == 0:
        return
    rule = f"stop_rule={stop_rule!r} with tol={tol:g}"
    advice = "raise max_iter or epsilon, or loosen tol"
    if action == "raise":
        raise RuntimeError(
            f"{caller}: {missed} of {converged.numel()} problems stopped at max_iter={max_iter} "
            f"before meeting {rule}; {advice}"
        )
    warnings.warn(
        f"{caller}: some problems stopped at max_iter={max_iter} before meeting {rule}, so "
        f"their results are not converged; {advice}, or pass on_nonconvergence='ignore'",
        RuntimeWarning,
        stacklevel=external_stacklevel(),
    )


def envelope_fallback(
    grad_cost: Tensor,
    grad_a: Tensor,
    grad_b: Tensor,
    plan: Tensor,
    grad_plan: Tensor | None,
    grad_distance: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Replace the implicit gradient of the problems where it is not finite by the envelope one.

    Problem ``k`` falls back when its implicit gradients (``grad_cost[k]``, ``grad_a[k]``,
    ``grad_b[k]``) hold a NaN or infinity while its upstream gradients (``grad_plan[k]``,
    ``grad_distance[k]``) do not: a non-finite upstream gradient is passed on as it is, never
    hidden. Its gradients become those of ``grad="envelope"``: ``grad_distance[k] * plan[k]``
    for the cost (the plan held constant, so ``grad_plan`` contributes nothing) and 0 for the
    marginals.

    Args:
        grad_cost: ``(B, M, N)`` implicit gradient with respect to the cost.
        grad_a: ``(B, M)`` and ``grad_b`` ``(B, N)``: with respect to the marginals.
        plan: ``(B, M, N)`` the plan of the forward pass.
        grad_plan: ``(B, M, N)`` upstream gradient of the plan, or ``None``.
        grad_distance: ``(B,)`` upstream gradient of the distance, or ``None``.

    Returns:
        ``(grad_cost, grad_a, grad_b, fell_back)``, the last ``(B,)`` bool. The inputs are
        returned unchanged when no problem falls back.
    """
    implicit_finite = _finite_per_problem(grad_cost) & _finite_per_problem(grad_a)
    implicit_finite &= _finite_per_problem(grad_b)
    upstream_finite = torch.ones_like(implicit_finite)
    if grad_plan is not None:
        upstream_finite &= _finite_per_problem(grad_plan)
    if grad_distance is not None:
        upstream_finite &= torch.isfinite(grad_distance)
    fell_back = ~implicit_finite & upstream_finite
    if not bool(fell_back.any()):
        return grad_cost, grad_a, grad_b, fell_back
    if grad_distance is None:
        envelope = torch.zeros_like(plan)
    else:
        envelope = plan * grad_distance[:, None, None]
    grad_cost = torch.where(fell_back[:, None, None], envelope, grad_cost)
    grad_a = torch.where(fell_back[:, None], 0.0, grad_a)
    grad_b = torch.where(fell_back[:, None], 0.0, grad_b)
    return grad_cost, grad_a, grad_b, fell_back


def _finite_per_problem(values: Tensor) -> Tensor:
    """``(B,)`` bool: whether ``values[k]`` holds no NaN and no infinity (its extremes only)."""
    if values.shape[0] == 0 or values[0].numel() == 0:
        return torch.ones(values.shape[0], dtype=torch.bool, device=values.device)
    low, high = values.reshape(values.shape[0], -1).aminmax(dim=1)
    return torch.isfinite(low) & torch.isfinite(high)


def report_grad_fallback(fell_back: Tensor, caller: str) -> None:
    """Count the problems that fell back to the envelope gradient and warn if there are any.

    Args:
        fell_back: bool flags of the problems of one backward pass.
        caller: the public function named in the message.
    """
    global _grad_fallbacks
    count = int(fell_back.sum()) if fell_back.numel() else 0
    if count == 0:
        return
    _grad_fallbacks += count
    warnings.warn(
        f"{caller}: the implicit gradient of some problems was not finite, so their envelope "
        "gradient (the plan held constant) was used instead; reidkit.ot.grad_fallback_count() "
        "counts them",
        RuntimeWarning,
        stacklevel=external_stacklevel(),
    )


def grad_fallback_count() -> int:
    """The problems of this process whose implicit gradient fell back to the envelope gradient.

    Counted by every backward pass of :func:`reidkit.sinkhorn` and
    :func:`reidkit.pairwise_ot_distance` (on either backend) since the process started; read it
    before and after a step to count that step's. Zero in any run where the implicit system
    behaved as designed.
    """
    return _grad_fallbacks
