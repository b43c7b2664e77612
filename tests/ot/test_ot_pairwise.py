""":func:`reidkit.pairwise_ot_distance` against a per-pair loop with POT."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ot.bregman import sinkhorn_log

from reidkit import pairwise_ot_distance, sinkhorn
from tests.ot.strategies import TIGHT


def _features(seed: int, b: int = 3, m: int = 5, ll: int = 4, n: int = 3, d: int = 8):
    generator = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(b, m, d, generator=generator, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(ll, n, d, generator=generator, dtype=torch.float64), dim=-1)
    return x, y


def test_distances_equal_a_loop_over_pairs_with_pot() -> None:
    x, y = _features(0)
    distances = pairwise_ot_distance(x, y, epsilon=0.1, **TIGHT)
    expected = np.empty(distances.shape)
    for i in range(x.shape[0]):
        for j in range(y.shape[0]):
            cost = (1 - x[i] @ y[j].T).numpy()
            m, n = cost.shape
            plan = sinkhorn_log(
                np.full(m, 1 / m), np.full(n, 1 / n), cost, 0.1, stopThr=1e-12, numItermax=20_000
            )
            expected[i, j] = (plan * cost).sum()
    assert np.allclose(distances.numpy(), expected, atol=1e-9)


@pytest.mark.parametrize("grad", ["implicit", "envelope"])
def test_gradients_equal_those_of_the_dense_solver(grad: str) -> None:
    x, y = _features(1)
    # Features of any norm: the cosine cost normalises them (its gradient has no radial part).
    x = (x * torch.linspace(0.5, 2, x.shape[1], dtype=torch.float64)[:, None]).requires_grad_()
    y = (3 * y).requires_grad_()
    weights = torch.randn(x.shape[0], y.shape[0], dtype=torch.float64)
    pairwise = pairwise_ot_distance(x, y, epsilon=0.1, grad=grad, chunk_size=3, **TIGHT)
    got = torch.autograd.grad((pairwise * weights).sum(), (x, y))
    unit_x, unit_y = x / x.norm(dim=-1, keepdim=True), y / y.norm(dim=-1, keepdim=True)
    cost = 1 - torch.einsum("bmd,lnd->blmn", unit_x, unit_y)
    dense = sinkhorn(cost, epsilon=0.1, grad=grad, **TIGHT).distance
    want = torch.autograd.grad((dense * weights).sum(), (x, y))
    assert torch.allclose(pairwise, dense, atol=1e-12)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-9)


def test_gradcheck_through_the_features() -> None:
    x, y = _features(2, b=2, m=3, ll=2, n=2, d=4)
    assert torch.autograd.gradcheck(
        lambda a, b: pairwise_ot_distance(a, b, epsilon=0.2, **TIGHT),
        (x.requires_grad_(), y.requires_grad_()),
    )


def test_x_mask_equals_dropping_the_padded_patches() -> None:
    x, y = _features(3, b=2, m=6)
    x_mask = torch.tensor([[True] * 6, [True, True, True, False, False, True]])
    masked = pairwise_ot_distance(x, y, epsilon=0.1, x_mask=x_mask, **TIGHT)
    kept = pairwise_ot_distance(x[1:, x_mask[1]], y, epsilon=0.1, **TIGHT)
    assert torch.allclose(masked[1], kept[0], atol=1e-10)


@pytest.mark.parametrize("grad", ["implicit", "envelope"])
def test_x_mask_gradients_equal_those_without_the_padded_patches(grad: str) -> None:
    x, y = _features(5, b=2, m=6)
    x_mask = torch.tensor([[True] * 6, [True, False, True, True, False, True]])
    x, y = x.requires_grad_(), y.requires_grad_()
    masked = pairwise_ot_distance(x, y, epsilon=0.1, x_mask=x_mask, grad=grad, **TIGHT)
    grad_x, grad_y = torch.autograd.grad(masked[1].sum(), (x, y))
    kept = x.detach()[1:, x_mask[1]].requires_grad_()
    y_alone = y.detach().requires_grad_()
    alone = pairwise_ot_distance(kept, y_alone, epsilon=0.1, grad=grad, **TIGHT)
    want_x, want_y = torch.autograd.grad(alone.sum(), (kept, y_alone))
    assert torch.allclose(grad_x[1, x_mask[1]], want_x[0], atol=1e-9)
    assert (grad_x[1, ~x_mask[1]] == 0).all() and (grad_x[0] == 0).all()
    assert torch.allclose(grad_y, want_y, atol=1e-9)


def test_chunking_does_not_change_results() -> None:
    x, y = _features(4, ll=7)
    full = pairwise_ot_distance(x, y, epsilon=0.1, chunk_size=100)
    chunked = pairwise_ot_distance(x, y, epsilon=0.1, chunk_size=2)
    assert torch.allclose(full, chunked, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": torch.randn(2, 3)}, "x"),
        ({"y": torch.randn(2, 3, 5)}, "y"),
        ({"x_mask": torch.ones(2, 4, dtype=torch.bool)}, "x_mask"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"epsilon": 0.0}, "epsilon"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_argument(kwargs: dict, message: str) -> None:
    x, y = _features(5, b=2, m=3, d=8)
    arguments = {"x": x, "y": y, **kwargs}
    with pytest.raises(ValueError, match=message):
        pairwise_ot_distance(arguments.pop("x"), arguments.pop("y"), **arguments)


@pytest.mark.parametrize(
    ("x_mask", "message"),
    [
        (
            torch.ones(2, 3),
            "x_mask must be a boolean tensor of shape (2, 3) (True on real patches), got shape "
            "(2, 3) and dtype torch.float32",
        ),
        (
            torch.ones(2, 4, dtype=torch.bool),
            "x_mask must have the shape (B, M) = (2, 3) of x, got (2, 4)",
        ),
        (
            torch.tensor([[True, False, True], [False, False, False]]),
            "x_mask must keep at least one real patch per image, got none for image 1",
        ),
    ],
)
def test_bad_x_mask_is_named_with_what_was_expected(x_mask: torch.Tensor, message: str) -> None:
    x, y = _features(6, b=2, m=3)
    with pytest.raises(ValueError) as error:
        pairwise_ot_distance(x, y, x_mask=x_mask)
    assert str(error.value) == message


def test_features_of_different_dtypes_are_computed_in_the_promoted_dtype() -> None:
    x, y = _features(7)
    x32 = x.float().requires_grad_()
    y64 = y.clone().requires_grad_()
    mixed = pairwise_ot_distance(x32, y64, epsilon=0.1, **TIGHT)
    expected = pairwise_ot_distance(x.float().double(), y, epsilon=0.1, **TIGHT)
    assert mixed.dtype == torch.float64 and torch.allclose(mixed, expected, atol=1e-12)
    mixed.sum().backward()
    assert x32.grad.dtype == torch.float32 and y64.grad.dtype == torch.float64


def test_epsilon_may_be_a_numpy_scalar() -> None:
    x, y = _features(8)
    epsilon = np.float32(0.1)
    expected = pairwise_ot_distance(x, y, epsilon=float(epsilon))
    assert torch.equal(pairwise_ot_distance(x, y, epsilon=epsilon), expected)


@pytest.mark.parametrize("grad", ["implicit", "unrolled"])
def test_nonconvergence_is_reported_once_per_call_site(grad: str) -> None:
    x, y = _features(9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(2):
            pairwise_ot_distance(x, y, epsilon=0.01, max_iter=2, grad=grad)
    assert [str(w.message) for w in caught] == [
        "pairwise_ot_distance: some problems stopped at max_iter=2 before meeting "
        "stop_rule='marginal' with tol=0.001, so their results are not converged; raise "
        "max_iter or epsilon, or loosen tol, or pass on_nonconvergence='ignore'"
    ]
    assert caught[0].filename == __file__
    with pytest.raises(RuntimeError, match="pairwise_ot_distance: 12 of 12 problems"):
        pairwise_ot_distance(x, y, epsilon=0.01, max_iter=2, on_nonconvergence="raise")
