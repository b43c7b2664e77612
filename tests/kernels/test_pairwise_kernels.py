"""The fused feature-level kernels (MMPL patch-to-token distances) against the torch path."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reidkit import pairwise_ot_distance
from reidkit.kernels.pairwise_forward import pairwise_potentials
from reidkit.ot.solvers import log_domain_potentials
from tests.kernels.helpers import DEVICE, DTYPES, KERNEL_MARKS, examples, unit_features
from tests.ot.strategies import allowed_outcomes

pytestmark = KERNEL_MARKS


def _explicit_problems(
    x: torch.Tensor, y: torch.Tensor, x_mask: torch.Tensor | None
) -> tuple[torch.Tensor, ...]:
    """The flat ``(B L, M, N)`` cosine costs and uniform marginals of the pairwise problems."""
    (batch, m, _), (num_classes, n, _) = x.shape, y.shape
    cost = (1 - torch.einsum("bmd,lnd->blmn", x.float(), y.float())).reshape(-1, m, n)
    real = torch.ones(batch, m, device=x.device) if x_mask is None else x_mask.float()
    a = (real / real.sum(dim=1, keepdim=True))[:, None].expand(batch, num_classes, m)
    b = torch.full((batch * num_classes, n), 1 / n, device=x.device)
    return cost, a.reshape(-1, m), b


def _patch_mask(batch: int, m: int, seed: int) -> torch.Tensor:
    """``(B, M)`` random real-patch mask with at least one real patch per image."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, m, generator=generator) > 0.4
    mask[:, 0] = True
    return mask.to(DEVICE)


def _distance_and_grads(backend: str, x: torch.Tensor, y: torch.Tensor, **options) -> tuple:
    x, y = x.clone().requires_grad_(), y.clone().requires_grad_()
    distance = pairwise_ot_distance(x, y, backend=backend, **options)
    # Distinct upstream weights per pair, so every (b, l) problem is checked on its own.
    weights = torch.linspace(-1, 1, distance.numel(), device=DEVICE).reshape(distance.shape)
    (distance * weights).sum().backward()
    return distance, x.grad, y.grad


FEATURE_SIZES = [(1, 1, 1, 1), (3, 7, 2, 3), (2, 20, 3, 6), (1, 37, 2, 17), (2, 5, 1, 32)]


@settings(max_examples=examples(0.3))
@given(
    st.sampled_from(FEATURE_SIZES),
    st.sampled_from([3, 8, 70]),
    st.booleans(),
    st.sampled_from([("marginal", 1e-3), ("marginal", 1e-5), ("update", 0.05)]),
    st.sampled_from([0.02, 0.1]),
    st.integers(0, 2**16),
)
def test_potentials_and_stop_decisions_agree_with_the_torch_solver(
    sizes: tuple, d: int, masked: bool, stop: tuple, epsilon: float, seed: int
) -> None:
    batch, m, num_classes, n = sizes
    x, y = unit_features(seed, batch, m, d), unit_features(seed + 1, num_classes, n, d)
    x_mask = _patch_mask(batch, m, seed) if masked else None
    stop_rule, tol = stop
    distance, f, g, converged = pairwise_potentials(x, y, x_mask, epsilon, 30, tol, stop_rule)
    f, g, converged = f.reshape(-1, m), g.reshape(-1, n), converged.reshape(-1)
    cost, a, b = _explicit_problems(x, y, x_mask)
    assert torch.equal(torch.isinf(f), a == 0)
    exponent_tol = 64 * 2**-24 * (float(cost.abs().max()) / epsilon + 1)
    allowed = allowed_outcomes(cost, a, b, epsilon, 30, stop_rule, tol)
    for index, outcomes in enumerate(allowed):
        # The kernel's potentials are the torch solver's after one of the iteration counts at
        # which a float32 solver may stop (one wherever the decision is not at round-off).
        problem = slice(index, index + 1)
        matches = []
        for count, flag in outcomes:
            same = log_domain_potentials(
                cost[problem], a[problem], b[problem], epsilon, count, None
            )
            real = a[problem] > 0
            close = torch.allclose(f[problem][real], same.f[real], atol=exponent_tol * epsilon)
            close &= torch.allclose(g[problem], same.g, atol=exponent_tol * epsilon)
            matches.append(close and flag == bool(converged[index]))
        assert any(matches)
    plan = torch.exp(
        (torch.where(a > 0, f, -torch.inf)[:, :, None] + g[:, None, :] - cost) / epsilon
    )
    assert torch.allclose(distance.reshape(-1), (plan * cost).sum(dim=(1, 2)), atol=1e-5)


@settings(max_examples=examples(0.5))
@given(
    st.sampled_from(FEATURE_SIZES),
    st.sampled_from([1, 3, 8, 70]),  # d = 1: cosines of +-1, plans near disconnected
    st.booleans(),
    st.sampled_from(["implicit", "envelope"]),
    st.sampled_from([3, 30]),
    st.sampled_from(DTYPES),
    st.integers(0, 2**16),
)
def test_distances_and_feature_gradients_equal_the_torch_path(
    sizes: tuple, d: int, masked: bool, grad: str, iterations: int, dtype: torch.dtype, seed: int
) -> None:
    batch, m, num_classes, n = sizes
    x = unit_features(seed, batch, m, d).to(dtype)
    y = unit_features(seed + 1, num_classes, n, d).to(dtype)
    # A fixed iteration count: both paths return the same iterate (stop decisions are
    # checked above), converged or not.
    options = {"epsilon": 0.1, "max_iter": iterations, "tol": None, "grad": grad}
    options["x_mask"] = _patch_mask(batch, m, seed) if masked else None
    fused = _distance_and_grads("triton", x, y, **options)
    # The torch path on the rounded features in fp32; the kernels compute in fp32 too.
    reference = _distance_and_grads("torch", x.float(), y.float(), **options)
    assert all(t.dtype == dtype for t in fused)
    atol = 1e-5 if dtype == torch.float32 else 4e-3  # half outputs are rounded
    for value, expected in zip(fused, reference):
        assert torch.allclose(value.float(), expected, atol=atol, rtol=1e-3)
    if masked:  # padded patches get no gradient
        assert not fused[1][~options["x_mask"]].any()


def test_implicit_gradient_matches_the_float64_torch_path_at_convergence() -> None:
    x, y = unit_features(6, 2, 11, 24), unit_features(7, 3, 4, 24)
    options = {"epsilon": 0.1, "max_iter": 500, "tol": 1e-7, "grad": "implicit"}
    fused = _distance_and_grads("triton", x, y, **options)
    reference = _distance_and_grads("torch", x.double(), y.double(), **options)
    for value, expected in zip(fused, reference):
        assert torch.allclose(value.double(), expected, atol=2e-5)


def test_backward_keeps_only_features_and_potentials() -> None:
    batch, m, num_classes, n, d = 2, 10, 3, 4, 8
    x = unit_features(8, batch, m, d).requires_grad_()
    y = unit_features(9, num_classes, n, d).requires_grad_()
    distance = pairwise_ot_distance(x, y, backend="triton")
    saved = distance.grad_fn.saved_tensors
    # x, y and the potentials f (B, L, M), g (B, L, N): never a (B, L, M, N) cost or plan.
    assert sum(t.numel() for t in saved) == x.numel() + y.numel() + batch * num_classes * (m + n)


# The exact gradient after the default 50 iterations far from the fixed point: the plans'
# supports fall apart in float32 and the implicit system is singular.
@pytest.mark.parametrize(
    ("scale", "epsilon"),
    [(1.0, 1e-3), (100.0, 0.1), (30.0, 0.1)],
    ids=["cosine costs at epsilon 1e-3", "cosine costs x100", "raw logits x30"],
)
def test_implicit_gradient_away_from_the_fixed_point_is_finite_and_equal_on_both_paths(
    scale: float, epsilon: float
) -> None:
    x, y = scale * unit_features(10, 2, 10, 16), unit_features(11, 2, 4, 16)
    options = {"epsilon": epsilon, "max_iter": 50, "tol": None, "grad": "implicit"}
    fused = _distance_and_grads("triton", x, y, **options)
    reference = _distance_and_grads("torch", x, y, **options)
    # float32 rounding of the exponents, amplified by 1 / epsilon in the gradient.
    rounding = 2**-24 * (scale + 1) / epsilon
    for value, expected in zip(fused, reference):
        assert torch.isfinite(value).all()
        scale_of = expected.abs().max()
        assert torch.allclose(value / scale_of, expected / scale_of, atol=1e-6 + 64 * rounding)
