"""The fused feature-level kernels (MMPL patch-to-token distances) against the torch path."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reidkit import pairwise_ot_distance
from reidkit.kernels.sinkhorn_kernels import pairwise_potentials
from reidkit.ot.solvers import log_domain_potentials
from tests.kernels.helpers import DEVICE, DTYPES, KERNEL_MARKS, examples, unit_features

pytestmark = KERNEL_MARKS


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


@settings(max_examples=examples(0.5))
@given(
    st.sampled_from([(1, 1, 1, 1), (3, 7, 2, 3), (2, 20, 3, 6), (1, 37, 2, 17), (2, 5, 1, 32)]),
    st.sampled_from([3, 8, 70]),  # d = 1 makes every plan near-disconnected: ill-posed
    st.booleans(),
    st.sampled_from(["implicit", "envelope"]),
    st.sampled_from([("marginal", 1e-3), ("update", 0.05), ("marginal", None)]),
    st.sampled_from(DTYPES),
    st.integers(0, 2**16),
)
def test_distances_and_feature_gradients_equal_the_torch_path(
    sizes: tuple, d: int, masked: bool, grad: str, stop: tuple, dtype: torch.dtype, seed: int
) -> None:
    batch, m, num_classes, n = sizes
    x = unit_features(seed, batch, m, d).to(dtype)
    y = unit_features(seed + 1, num_classes, n, d).to(dtype)
    stop_rule, tol = stop
    options = {"epsilon": 0.1, "max_iter": 30, "tol": tol, "stop_rule": stop_rule, "grad": grad}
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


@pytest.mark.parametrize("stop", [("marginal", 1e-4), ("update", 0.05)])
def test_potentials_equal_the_torch_solver_on_the_explicit_cost(stop: tuple) -> None:
    x, y = unit_features(3, 2, 9, 16), unit_features(4, 3, 5, 16)
    x_mask = _patch_mask(2, 9, 5)
    distance, f, g = pairwise_potentials(x, y, x_mask, 0.05, 50, stop[1], stop[0])
    cost = (1 - torch.einsum("bmd,lnd->blmn", x, y)).reshape(6, 9, 5)
    a = (x_mask / x_mask.sum(dim=1, keepdim=True))[:, None].expand(2, 3, 9).reshape(6, 9)
    b = torch.full((6, 5), 1 / 5, device=DEVICE)
    f_ref, g_ref, _ = log_domain_potentials(cost, a, b, 0.05, 50, stop[1], stop[0])
    real = a > 0
    assert torch.equal(torch.isinf(f.reshape(6, 9)), ~real)
    assert torch.allclose(f.reshape(6, 9)[real], f_ref[real], atol=1e-5)
    assert torch.allclose(g.reshape(6, 5), g_ref, atol=1e-5)
    plan = torch.exp((f_ref[:, :, None] + g_ref[:, None, :] - cost) / 0.05)
    assert torch.allclose(distance.reshape(6), (plan * cost).sum(dim=(1, 2)), atol=1e-5)


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
