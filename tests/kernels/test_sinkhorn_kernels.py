"""The fused Triton kernels against the plain-torch solvers (Triton's interpreter on the CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from reidkit import pairwise_ot_distance, sinkhorn
from reidkit.kernels import triton_available, triton_supports, triton_supports_pairwise

pytestmark = [
    pytest.mark.skipif(not triton_available(), reason="triton is not installed"),
    # log(0) = -inf marks zero-mass rows and columns; the interpreter's numpy reports it.
    pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning"),
]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# (dtype, atol on plans): half-precision inputs are rounded before both solvers see them.
DTYPES = [(torch.float32, 2e-6), (torch.float16, 2e-6)]


@st.composite
def cost_problems(draw: st.DrawFn) -> dict:
    batch = draw(st.integers(1, 3))
    m = draw(st.sampled_from([1, 2, 5, 16, 37]))
    n = draw(st.sampled_from([1, 3, 8, 17]))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    cost = 2 * torch.rand(batch, m, n, generator=generator)
    a = torch.rand(batch, m, generator=generator) + 0.1
    b = torch.rand(batch, n, generator=generator) + 0.1
    return {
        "cost": cost,
        "a": a / a.sum(-1, keepdim=True),
        "b": b / b.sum(-1, keepdim=True),
        "epsilon": draw(st.sampled_from([0.05, 0.1, 0.5])),
        "stop": draw(st.sampled_from([("marginal", 1e-3), ("update", 0.05), ("marginal", None)])),
    }


@settings(max_examples=12)
@given(cost_problems(), st.sampled_from(DTYPES))
def test_kernel_equals_the_torch_path(problem: dict, dtype_atol: tuple) -> None:
    dtype, atol = dtype_atol
    cost = problem["cost"].to(DEVICE, dtype)
    stop_rule, tol = problem["stop"]
    common = {
        "epsilon": problem["epsilon"],
        "max_iter": 30,
        "tol": tol,
        "stop_rule": stop_rule,
    }
    a, b = problem["a"].to(DEVICE), problem["b"].to(DEVICE)
    fused = sinkhorn(cost, a, b, backend="triton", **common)
    # The torch path (scaling domain for these costs) is the oracle; iteration counts agree.
    reference = sinkhorn(cost, a, b, backend="torch", **common)
    assert torch.equal(fused.n_iter, reference.n_iter)
    assert torch.allclose(fused.plan.float(), reference.plan.float(), atol=atol, rtol=1e-3)
    assert torch.allclose(fused.distance.float(), reference.distance.float(), atol=1e-4)


def test_masked_rows_and_columns_match_the_torch_path() -> None:
    generator = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 9, 6, generator=generator).to(DEVICE)
    rows = torch.rand(3, 9, generator=generator) > 0.3
    cols = torch.rand(3, 6, generator=generator) > 0.3
    rows[:, 0] = cols[:, 0] = True
    mask = (rows.to(DEVICE), cols.to(DEVICE))
    fused = sinkhorn(cost, epsilon=0.1, backend="triton", mask=mask)
    reference = sinkhorn(cost, epsilon=0.1, backend="torch", mask=mask)
    assert torch.equal(fused.n_iter, reference.n_iter)
    assert torch.allclose(fused.plan, reference.plan, atol=1e-6)
    assert torch.allclose(fused.f, reference.f, atol=1e-4)


@pytest.mark.parametrize("grad", ["implicit", "envelope"])
def test_kernel_gradients_equal_the_torch_path(grad: str) -> None:
    generator = torch.Generator().manual_seed(1)
    cost = (2 * torch.rand(2, 12, 5, generator=generator)).to(DEVICE)
    grads = []
    for backend in ("triton", "torch"):
        leaf = cost.clone().requires_grad_()
        result = sinkhorn(leaf, epsilon=0.1, grad=grad, backend=backend, tol=1e-5, max_iter=200)
        (result.distance.sum() + result.plan[:, 0].sum()).backward()
        grads.append(leaf.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def _features(seed: int, b: int, m: int, num_classes: int, n: int, d: int) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(b, m, d, generator=generator), dim=-1)
    y = F.normalize(torch.randn(num_classes, n, d, generator=generator), dim=-1)
    return x.to(DEVICE), y.to(DEVICE)


@settings(max_examples=6)
@given(
    st.sampled_from([(1, 1, 1), (3, 7, 3), (2, 20, 6)]),
    st.sampled_from([8, 70]),
    st.booleans(),
    st.sampled_from(["implicit", "envelope"]),
)
def test_pairwise_kernel_equals_the_torch_path(
    sizes: tuple, d: int, masked: bool, grad: str
) -> None:
    b, m, n = sizes
    x, y = _features(2, b, m, 4, n, d)
    x_mask = None
    if masked:
        x_mask = torch.ones(b, m, dtype=torch.bool, device=DEVICE)
        x_mask[0, m // 2 + 1 :] = False
    outputs = []
    for backend in ("triton", "torch"):
        xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
        distance = pairwise_ot_distance(
            xs, ys, epsilon=0.1, grad=grad, backend=backend, x_mask=x_mask
        )
        weights = torch.linspace(-1, 1, distance.numel(), device=DEVICE).reshape(distance.shape)
        (distance * weights).sum().backward()
        outputs.append((distance, xs.grad, ys.grad))
    for fused, reference in zip(*outputs):
        assert torch.allclose(fused, reference, atol=2e-5)


def test_pairwise_kernel_accepts_half_precision_features() -> None:
    x, y = _features(3, 2, 10, 3, 4, 32)
    fused = pairwise_ot_distance(x.half(), y.half(), backend="triton")
    reference = pairwise_ot_distance(x.half().float(), y.half().float(), backend="torch")
    assert fused.dtype == torch.float16
    assert torch.allclose(fused.float(), reference, atol=2e-3)


def test_supported_shapes_and_fallbacks() -> None:
    assert triton_supports(torch.rand(2, 128, 32, device=DEVICE))
    assert not triton_supports(torch.rand(2, 129, 4, device=DEVICE))
    assert not triton_supports(torch.rand(2, 4, 33, device=DEVICE))
    assert not triton_supports(torch.rand(2, 4, 4, device=DEVICE, dtype=torch.float64))
    x, y = _features(4, 2, 3, 2, 40, 8)
    assert not triton_supports_pairwise(x, y)
    with pytest.raises(ValueError, match="backend='triton'"):
        pairwise_ot_distance(x, y, backend="triton")
    with pytest.raises(ValueError, match="backend='triton'"):
        sinkhorn(torch.rand(2, 200, 3, device=DEVICE), epsilon=0.1, backend="triton")
