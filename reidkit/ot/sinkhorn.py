"""Batched, differentiable entropic optimal transport: :func:`sinkhorn` and :class:`SinkhornOT`.

Solves MMPL eq. 14-15 (Cuturi's Sinkhorn distance)::

    T* = argmin_{T 1 = a, T^T 1 = b, T >= 0}  <T, C> - epsilon * h(T),    d = <T*, C>,

for any number of leading batch dimensions, with the iterations of eq. 16-17.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from reidkit._deprecation import moved_names
from reidkit.kernels import triton_supports
from reidkit.ot import solvers, validation
from reidkit.ot.backend import use_triton
from reidkit.ot.diagnostics import report_nonconvergence
from reidkit.ot.implicit import ImplicitSinkhorn, plan_from_potentials, transport_cost
from reidkit.ot.options import SinkhornOptions, options_from_keywords

Mask = tuple[Tensor | None, Tensor | None]


@dataclasses.dataclass(frozen=True)
class SinkhornResult:
    """The solution of a batch of entropic OT problems with leading shape ``(...)``.

    Attributes:
        plan: ``(..., M, N)`` transport plan ``T*`` (zero on masked rows and columns).
        distance: ``(...)`` the transport cost ``<T*, C>`` (MMPL's ``d_OT``, eq. 13).
        f: ``(..., M)`` row potentials (0 on masked rows), detached except with
            ``grad="unrolled"``.
        g: ``(..., N)`` column potentials (0 on masked columns); together
            ``plan = exp((f[..., :, None] + g[..., None, :] - cost) / epsilon)``.
        n_iter: ``(...)`` int64, the iterations each problem ran.
        marginal_error: ``(...)`` ``|T 1 - a|_1 + |T^T 1 - b|_1`` of the returned plan.
        converged: ``(...)`` bool, ``True`` where the stop rule was met within ``max_iter``
            (everywhere with ``tol=None``). A problem that is not converged returns its last
            iterate; see ``on_nonconvergence`` of :class:`SinkhornOptions`.
        grad_fallback: ``(...)`` bool, ``False`` when returned; a backward pass through the
            implicit gradient sets it, in place, for the problems whose implicit gradient was
            not finite and was replaced by the envelope gradient
            (:mod:`reidkit.ot.diagnostics`). It stays ``False`` with ``grad="envelope"`` or
            ``"unrolled"``.
    """

    plan: Tensor
    distance: Tensor
    f: Tensor
    g: Tensor
    n_iter: Tensor
    marginal_error: Tensor
    converged: Tensor
    grad_fallback: Tensor


def sinkhorn(
    cost: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    *,
    options: SinkhornOptions | None = None,
    mask: Mask | None = None,
    **solver_options: Any,
) -> SinkhornResult:
    """Solve a batch of entropic optimal-transport problems (MMPL eq. 14-17).

    ``sinkhorn(cost, epsilon=0.1, max_iter=80)`` and
    ``sinkhorn(cost, options=SinkhornOptions(epsilon=0.1, max_iter=80))`` are the same call.

    Args:
        cost: ``(..., M, N)`` cost matrices, any float dtype (half precision is computed in
            float32 and the plan and distance are returned in the input dtype).
        a: ``(..., M)`` row marginals (broadcastable); uniform over the real rows if ``None``.
        b: ``(..., N)`` column marginals (broadcastable); uniform over the real columns if
            ``None``.
        options: the solver settings, a :class:`SinkhornOptions`.
        mask: ``(row_mask, col_mask)``, boolean ``(..., M)`` and ``(..., N)`` tensors (either may
            be ``None``) with ``True`` on real entries, so that problems of different sizes share
            one padded batch. Masked entries of ``cost`` are ignored (they may be non-finite).
        **solver_options: the fields of :class:`SinkhornOptions` as keywords: they build the
            options (``epsilon`` is then required), or override fields of ``options``:

            - ``epsilon``: entropic regularisation, MMPL's lambda and POT's ``reg`` (> 0; a
              Python or NumPy scalar or a 0-d tensor, taken as a constant).
              ``|cost| / epsilon`` must be representable in the working dtype (below about
              5e36 in float32).
            - ``max_iter`` (50): iteration cap (>= 1). One iteration updates the rows, then the
              columns.
            - ``tol`` (1e-3): stopping threshold per problem; ``None`` runs exactly ``max_iter``
              iterations (as AAformer's 3 iterations). With ``stop_rule="marginal"`` it bounds
              the L1 error of the row marginals (columns are exact after each iteration).
            - ``stop_rule`` (``"marginal"``) or ``"update"``, the MMPL rule (sec. 4.2,
              ``tol=0.05``): stop when the mean absolute change of the row scaling
              ``u = exp(f / epsilon)`` in one iteration falls below ``tol``, measured on the cost
              shifted to mean 1 (as a cosine cost ``1 - cos``), so that adding a constant to
              the cost changes nothing (:mod:`reidkit.ot.solvers`). The iteration that meets it
              is applied. It is looser than the marginal rule: it can stop with marginal errors
              of several percent.
            - ``grad`` (``"implicit"``): the exact gradient of ``distance`` and ``plan`` for the
              returned plan, from a regularised solve that never fails (see
              :mod:`reidkit.ot.implicit`; memory independent of ``max_iter``); ``"envelope"``
              (the plan is a constant: ``d distance / d cost = plan``, the gradient of the
              regularised value rather than of ``<T*, C>``); or ``"unrolled"`` (autograd
              through the iterations in the log domain; memory grows with ``max_iter``).
            - ``backend`` (``"auto"``): ``"torch"``, ``"triton"`` (the fused kernel of
              :mod:`reidkit.kernels`; raises if Triton is missing or the shape is unsupported)
              or ``"auto"`` (Triton for CUDA tensors of a supported shape when Triton imports,
              torch otherwise).
            - ``on_nonconvergence`` (``"warn"``): what to do when some problem stops at
              ``max_iter`` with its stop rule unmet: ``"warn"`` (one :class:`RuntimeWarning`
              per call site, under Python's default warning filters), ``"raise"``
              (:class:`RuntimeError`) or ``"ignore"``. The flags are in ``converged`` either
              way.
            - ``check_every`` (10): iterations between host synchronisations that end the loop
              once every problem has converged, on an accelerator (on the CPU, where a look
              costs nothing, every iteration is looked at); results do not depend on it.

    Returns:
        A :class:`SinkhornResult`. A batch of zero problems, ``cost`` ``(0, M, N)``, gives
        empty results.

    Raises:
        ValueError: on non-finite costs, ``|cost| / epsilon`` beyond the working dtype,
            ``epsilon <= 0``, negative marginals or marginals whose sums are off 1 by more than
            ``1e-3`` (closer ones are renormalised), mismatched shapes, ``max_iter < 1``, or an
            unknown mode or backend.
        TypeError: for a keyword that is not a field of :class:`SinkhornOptions`, or without
            ``epsilon`` and ``options``.
        RuntimeError: with ``on_nonconvergence="raise"``, if some problem did not converge.
    """
    options = options_from_keywords("sinkhorn", options, solver_options)
    validation.check_cost(cost)
    epsilon, grad = options.epsilon, options.grad
    *batch, m, n = cost.shape
    row_mask, col_mask = _split_mask(mask)
    row_valid = validation.broadcast_mask(
        "mask[0] (row mask)", row_mask, torch.Size([*batch, m]), cost.device
    )
    col_valid = validation.broadcast_mask(
        "mask[1] (column mask)", col_mask, torch.Size([*batch, n]), cost.device
    )
    entry_valid = _entry_mask(row_valid, col_valid)
    work_dtype = torch.float64 if cost.dtype == torch.float64 else torch.float32
    validation.check_cost_values(cost.detach(), entry_valid, epsilon, work_dtype)

    work_cost = cost.to(work_dtype)
    a = validation.marginal("a", a, torch.Size([*batch, m]), row_valid, work_cost)
    b = validation.marginal("b", b, torch.Size([*batch, n]), col_valid, work_cost)

    flat_cost = work_cost.reshape(-1, m, n)
    flat_a, flat_b = a.reshape(-1, m), b.reshape(-1, n)
    if entry_valid is not None:
        flat_valid = entry_valid.expand(*batch, m, n).reshape(-1, m, n)
        # Fill masked entries with each problem's smallest real cost: finite and in range.
        fill = torch.where(flat_valid, flat_cost.detach(), float("inf")).amin(dim=(1, 2))
        flat_cost = torch.where(flat_valid, flat_cost, fill[:, None, None])

    triton = use_triton(
        options,
        triton_supports,
        "a supported shape (see reidkit.kernels.triton_supports)",
        cost=flat_cost,
    )
    settings = (epsilon, options.max_iter, options.tol, options.stop_rule)
    if flat_cost.shape[0] == 0:
        f, g = torch.zeros_like(flat_a), torch.zeros_like(flat_b)
        n_iter = torch.zeros(0, dtype=torch.int64, device=cost.device)
        converged = torch.ones(0, dtype=torch.bool, device=cost.device)
    elif grad == "unrolled":
        f, g, n_iter, converged = solvers.log_domain_potentials(
            flat_cost, flat_a, flat_b, *settings, options.check_every
        )
    else:
        with torch.no_grad():
            if triton:
                from reidkit.kernels.cost_tile import sinkhorn_potentials

                f, g, n_iter, converged = sinkhorn_potentials(
                    flat_cost.detach(), flat_a, flat_b, *settings
                )
            else:
                solve_potentials = (
                    solvers.scaling_domain_potentials
                    if solvers.choose_domain(flat_cost, epsilon) == "scaling"
                    else solvers.log_domain_potentials
                )
                f, g, n_iter, converged = solve_potentials(
                    flat_cost.detach(), flat_a, flat_b, *settings, options.check_every
                )
    grad_fallback = torch.zeros(batch, dtype=torch.bool, device=cost.device)
    if grad == "implicit":
        plan, distance = ImplicitSinkhorn.apply(
            flat_cost, flat_a, flat_b, f, g, epsilon, grad_fallback.view(-1)
        )
    else:  # the unrolled plan carries the graph of the iterations; the envelope one does not
        plan_cost = flat_cost if grad == "unrolled" else flat_cost.detach()
        plan = plan_from_potentials(plan_cost, f, g, epsilon)
        distance = transport_cost(plan, flat_cost)

    with torch.no_grad():
        error = (plan.sum(dim=2) - flat_a).abs().sum(dim=1) + (plan.sum(dim=1) - flat_b).abs().sum(
            dim=1
        )
    converged = converged.reshape(batch)
    report_nonconvergence(
        converged,
        options.on_nonconvergence,
        "sinkhorn",
        options.max_iter,
        options.tol,
        options.stop_rule,
    )
    out_dtype = cost.dtype
    return SinkhornResult(
        plan=plan.reshape(*batch, m, n).to(out_dtype),
        distance=distance.reshape(batch).to(out_dtype),
        f=_finite_potential(f).reshape(*batch, m),
        g=_finite_potential(g).reshape(*batch, n),
        n_iter=n_iter.reshape(batch),
        marginal_error=error.reshape(batch),
        converged=converged,
        grad_fallback=grad_fallback,
    )


def _split_mask(mask: Mask | None) -> Mask:
    if mask is None:
        return None, None
    if not isinstance(mask, (tuple, list)) or len(mask) != 2:
        raise ValueError(
            "mask must be a pair (row_mask (..., M) or None, col_mask (..., N) or None), "
            f"got {type(mask).__name__}"
        )
    return mask[0], mask[1]


def _entry_mask(row_valid: Tensor | None, col_valid: Tensor | None) -> Tensor | None:
    """``(..., M, N)`` mask of real entries from the row and column masks."""
    if row_valid is None:
        return None if col_valid is None else col_valid[..., None, :]
    if col_valid is None:
        return row_valid[..., :, None]
    return row_valid[..., :, None] & col_valid[..., None, :]


def _finite_potential(potential: Tensor) -> Tensor:
    """Potentials of zero-mass entries are ``-inf`` internally and reported as 0."""
    return torch.where(torch.isinf(potential), 0.0, potential)


class SinkhornOT(nn.Module):
    """Entropic optimal transport as a module holding its :class:`SinkhornOptions`.

    ``SinkhornOT(options)``, or the options' fields as keywords as :func:`sinkhorn` takes them
    (``SinkhornOT(epsilon=0.1)``; with ``options`` too, they override its fields). A
    non-converged problem is reported by one warning per call site of the module;
    ``forward(cost, a=None, b=None, mask=None)`` takes ``cost`` ``(..., M, N)``, marginals
    ``(..., M)``/``(..., N)`` and an optional ``(row_mask, col_mask)`` pair, and returns a
    :class:`SinkhornResult`.

    Attributes:
        options: the :class:`SinkhornOptions` of every call.

    Example:
        >>> ot = SinkhornOT(SinkhornOptions(epsilon=0.1, max_iter=50))
        >>> result = ot(torch.rand(8, 10, 4))
        >>> result.plan.shape, result.distance.shape
        (torch.Size([8, 10, 4]), torch.Size([8]))
    """

    def __init__(self, options: SinkhornOptions | None = None, **solver_options: Any) -> None:
        super().__init__()
        self.options = options_from_keywords("SinkhornOT", options, solver_options)

    def forward(
        self,
        cost: Tensor,
        a: Tensor | None = None,
        b: Tensor | None = None,
        mask: Mask | None = None,
    ) -> SinkhornResult:
        return sinkhorn(cost, a, b, options=self.options, mask=mask)

    def extra_repr(self) -> str:
        return ", ".join(
            f"{field.name}={getattr(self.options, field.name)!r}"
            for field in dataclasses.fields(self.options)
        )


__getattr__ = moved_names(
    __name__,
    {
        name: f"reidkit.ot.options.{name}"
        for name in ("Backend", "GradMode", "OnNonconvergence", "StopRule")
    },
)
