"""Exact gradients of the Sinkhorn plan by implicit differentiation, converged or not.

At the fixed point the plan ``T = exp((f_i + g_j - C_ij) / eps)`` satisfies ``T 1 = a`` and
``T^T 1 = b`` (MMPL eq. 15). Differentiating these constraints gives, for a perturbation
``dC, da, db``::

    H [df; dg] = [(T * dC) 1 + eps da; (T * dC)^T 1 + eps db],   H = [[diag(a), T], [T^T, diag(b)]]

so the vector-Jacobian product of any loss ``<W, dT>`` needs one solve with the symmetric
matrix ``H``. Memory is independent of the number of Sinkhorn iterations: only the cost and the
potentials are needed.

The solve uses the plan's own marginals ``T 1`` and ``T^T 1`` for ``a`` and ``b``: the returned
plan is the exact entropic solution for those marginals, so the gradient is exact for the plan
returned, converged or not, and ``H`` is then the signed Laplacian of the bipartite graph with
weights ``T``. Eliminating the longer side leaves, per problem, the graph Laplacian ``L`` of
the shorter side (weights ``(T^T diag(1 / T 1) T)_jk``), built with its diagonal as the sum of
its off-diagonal weights so that ``L 1 = 0`` holds exactly whatever the rounding. Its null
space holds one constant per connected component of the plan's support: the gauge
``f + c, g - c`` of each component, which leaves the plan and every gradient of the cost
unchanged. A rank-one term fixes the global gauge (``sum(y) = 0``) and a ridge
``RIDGE[dtype] * mean(T^T 1)`` (about 1e-6 of the column mass in float32) fixes the others, so
the system is positive definite and the solve never fails: a plan whose support fell apart
(entries underflowed to zero at small epsilon or large costs) gets the exact gradient of each
of its parts. Rows and columns whose mass underflowed to zero get 0.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from reidkit import checks
from reidkit.ot.diagnostics import envelope_fallback, report_grad_fallback
from reidkit.ot.solvers import CHUNK_ENTRIES

# Ridge of the reduced system, relative to the mean column mass, per dtype of the plan: a few
# units of round-off, far below the eigenvalues of a connected plan.
RIDGE = {torch.float32: 2.0**-20, torch.float64: 2.0**-49}


def plan_from_potentials(cost: Tensor, f: Tensor, g: Tensor, epsilon: float) -> Tensor:
    """``T_ij = exp((f_i + g_j - C_ij) / epsilon)`` (MMPL eq. 16 in log form).

    Args:
        cost: ``(B, M, N)``.
        f: ``(B, M)`` row potentials (``-inf`` on masked rows).
        g: ``(B, N)`` column potentials (``-inf`` on masked columns).
        epsilon: entropic regularisation.

    Returns:
        ``(B, M, N)`` transport plan.
    """
    # Three passes over one (B, M, N) buffer: the plan of a large batch is memory-bound.
    exponent = torch.sub((f / epsilon)[:, :, None], cost, alpha=1 / epsilon)
    return exponent.add_((g / epsilon)[:, None, :]).exp_()


def transport_cost(plan: Tensor, cost: Tensor) -> Tensor:
    """``<plan, cost>`` per problem, ``(B,)``, differentiable, without a ``(B, M, N)`` temporary.

    Args:
        plan: ``(B, M, N)``.
        cost: ``(B, M, N)`` of the dtype of ``plan``.
    """
    # An export: a graph of tensor operations (an autograd Function does not trace).
    if torch.jit.is_tracing():  # type: ignore[attr-defined,no-untyped-call]  # not in the stubs
        return (plan * cost).sum(dim=(1, 2))
    distance: Tensor = _TransportCost.apply(plan, cost)
    return distance


class _TransportCost(torch.autograd.Function):
    """``<plan, cost>`` by chunks of problems; gradients ``grad * cost`` and ``grad * plan``."""

    @staticmethod
    def forward(ctx: Any, plan: Tensor, cost: Tensor) -> Tensor:
        ctx.save_for_backward(plan, cost)
        batch, m, n = plan.shape
        flat_plan, flat_cost = plan.reshape(batch, m * n), cost.reshape(batch, m * n)
        chunk = max(1, CHUNK_ENTRIES // max(1, m * n))
        product = plan.new_empty(min(chunk, batch), flat_plan.shape[1])
        distance = plan.new_empty(batch)
        for start in range(0, batch, chunk):
            stop = min(start + chunk, batch)
            torch.mul(flat_plan[start:stop], flat_cost[start:stop], out=product[: stop - start])
            torch.sum(product[: stop - start], dim=1, out=distance[start:stop])
        return distance

    @staticmethod
    def backward(ctx: Any, grad_distance: Tensor) -> tuple[Tensor | None, Tensor | None]:
        plan, cost = ctx.saved_tensors
        scale = grad_distance[:, None, None]
        needs_plan, needs_cost = ctx.needs_input_grad
        return (scale * cost if needs_plan else None, scale * plan if needs_cost else None)


def solve_dual_system(plan: Tensor, rhs_rows: Tensor, rhs_cols: Tensor) -> tuple[Tensor, Tensor]:
    """Solve ``[[diag(T 1), T], [T^T, diag(T^T 1)]] [x; y] = [rhs_rows; rhs_cols]``.

    The right-hand side must sum to the same total over the rows and the columns of every
    connected component of the plan's support (it does for every gradient of a loss of the
    plan), which makes the singular system consistent; the solution of the ridge-regularised
    reduced system of the module docstring is returned (``sum(y) = 0`` over the real columns
    of a connected plan). Rows or columns with zero mass get 0.

    Args:
        plan: ``(B, M, N)`` non-negative plan, float32 or float64.
        rhs_rows: ``(B, M)``.
        rhs_cols: ``(B, N)``.

    Returns:
        ``x`` ``(B, M)`` and ``y`` ``(B, N)``.
    """
    if plan.shape[1] < plan.shape[2]:
        y, x = solve_dual_system(plan.transpose(1, 2), rhs_cols, rhs_rows)
        return x, y
    row_mass = plan.sum(dim=2)
    # T_ij / (T 1)_i <= 1: no overflow, even for a row mass that underflowed to a subnormal;
    # rows without mass (masked or underflowed) drop out of the system.
    row_mass = torch.where(row_mass > 0, row_mass, 1.0)
    scaled = plan / row_mass[:, :, None]
    weights = torch.bmm(scaled.transpose(1, 2), plan).double()  # (B, N, N), >= 0
    degree = weights.sum(dim=2)  # the column masses of the real rows
    real_cols = degree > 0
    real = real_cols.double()
    ridge = RIDGE[plan.dtype] * degree.sum(dim=1) / real.sum(dim=1).clamp(min=1)
    # Laplacian + gauge + ridge on the real columns, the identity on the others.
    diagonal = torch.where(real_cols, degree + ridge[:, None], 1.0)
    system = torch.diag_embed(diagonal) - weights + real[:, :, None] * real[:, None, :]
    # The two products with the plan as a product and a sum over its short side: faster than
    # one (M, N) x (N, 1) matrix product per problem.
    reduced = rhs_cols - (scaled * rhs_rows[:, :, None]).sum(dim=1)
    y = torch.linalg.solve_ex(system, reduced.double()[:, :, None])[0][:, :, 0].to(plan.dtype)
    x = (rhs_rows - (plan * y[:, None, :]).sum(dim=2)) / row_mass  # 0 on rows without mass
    return x, y


def implicit_vjp(
    cost: Tensor,
    f: Tensor,
    g: Tensor,
    epsilon: float,
    grad_plan: Tensor | None,
    grad_distance: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Vector-Jacobian product of ``(plan, distance = <plan, cost>)`` at the Sinkhorn solution.

    With ``T`` the plan of the potentials, ``W = grad_distance * C + grad_plan`` and ``[x; y]``
    solving ``H [x; y] = [(W * T) 1; (W * T)^T 1]``::

        dL/dC = grad_distance * T + T * (x_i + y_j - W_ij) / eps,   dL/da = x,   dL/db = y.

    ``dL/da`` and ``dL/db`` are defined up to a constant (the marginals live on the simplex).
    The batch is worked through in chunks whose plan is rebuilt from the potentials: no
    temporary of the batch's size is made, only the gradient.

    Args:
        cost: ``(B, M, N)``.
        f: ``(B, M)`` row potentials of the plan (``-inf`` on rows without mass).
        g: ``(B, N)`` column potentials of the plan (``-inf`` on columns without mass).
        epsilon: entropic regularisation.
        grad_plan: ``(B, M, N)`` upstream gradient of the plan, or ``None``.
        grad_distance: ``(B,)`` upstream gradient of the distance, or ``None``.

    Returns:
        Gradients with respect to ``cost`` ``(B, M, N)``, ``a`` ``(B, M)`` and ``b`` ``(B, N)``.
    """
    batch, m, n = cost.shape
    grad_cost = torch.empty_like(cost)
    grad_a, grad_b = cost.new_empty(batch, m), cost.new_empty(batch, n)
    chunk = max(1, CHUNK_ENTRIES // (m * n))
    for start in range(0, batch, chunk):
        part = slice(start, min(start + chunk, batch))
        cost_part = cost[part]
        plan = plan_from_potentials(cost_part, f[part], g[part], epsilon)
        if grad_plan is None:
            upstream = cast(Tensor, grad_distance)  # not both None: the callers check
            weighted = torch.mul(plan, cost_part).mul_(upstream[part, None, None])
        elif grad_distance is None:
            weighted = plan * grad_plan[part]
        else:
            weighted = torch.addcmul(grad_plan[part], cost_part, grad_distance[part, None, None])
            weighted.mul_(plan)  # W * T
        x, y = solve_dual_system(plan, weighted.sum(dim=2), weighted.sum(dim=1))
        grad_a[part], grad_b[part] = x, y
        # dL/dC = T * (x_i / eps + grad_distance + y_j / eps) - W * T / eps
        row_term = x / epsilon
        if grad_distance is not None:
            row_term += grad_distance[part, None]
        scale = torch.add(row_term[:, :, None], (y / epsilon)[:, None, :], out=grad_cost[part])
        scale.mul_(plan).sub_(weighted, alpha=1 / epsilon)
    return grad_cost, grad_a, grad_b


class ImplicitSinkhorn(torch.autograd.Function):
    """``(plan, distance)`` from converged potentials, differentiated implicitly.

    ``fallback`` ``(B,)`` bool is set, in place, for the problems whose backward fell back to
    the envelope gradient (:func:`reidkit.ot.diagnostics.envelope_fallback`).
    """

    @staticmethod
    def forward(
        ctx: Any,
        cost: Tensor,
        a: Tensor,
        b: Tensor,
        f: Tensor,
        g: Tensor,
        epsilon: float,
        fallback: Tensor,
    ) -> tuple[Tensor, Tensor]:
        plan = plan_from_potentials(cost, f, g, epsilon)
        distance = transport_cost(plan, cost)
        ctx.save_for_backward(cost, f, g)
        ctx.epsilon, ctx.fallback = epsilon, fallback
        ctx.set_materialize_grads(False)  # an unused output passes None, not a zero tensor
        return plan, distance

    @staticmethod
    @once_differentiable  # the solve is differentiated once; its own derivative is not formed
    def backward(
        ctx: Any,
        grad_plan: Tensor | None,
        grad_distance: Tensor | None,
    ) -> tuple[Tensor | None, ...]:
        if grad_plan is None and grad_distance is None:
            return (None,) * 7
        cost, f, g = ctx.saved_tensors
        grad_cost, grad_a, grad_b = implicit_vjp(cost, f, g, ctx.epsilon, grad_plan, grad_distance)
        if not checks.is_finite(grad_cost.sum() + grad_a.sum() + grad_b.sum()):
            # The sum of values holding NaN or infinity is not finite (a finite sum that
            # overflows only sends the check the long way round).
            plan = plan_from_potentials(cost, f, g, ctx.epsilon)
            grad_cost, grad_a, grad_b, fell_back = envelope_fallback(
                grad_cost, grad_a, grad_b, plan, grad_plan, grad_distance
            )
            ctx.fallback |= fell_back
            report_grad_fallback(fell_back, "sinkhorn")
        needs = ctx.needs_input_grad
        return (
            grad_cost if needs[0] else None,
            grad_a if needs[1] else None,
            grad_b if needs[2] else None,
            None,
            None,
            None,
            None,
        )
