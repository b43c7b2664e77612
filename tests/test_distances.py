"""The pairwise distances against float64 brute force, row pair by row pair."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reidkit.distances import (
    DISTANCE_NAMES,
    CosineDistance,
    DotProductSimilarity,
    EuclideanDistance,
    get_distance,
    similarity_logits,
)


def brute_force(x: np.ndarray, y: np.ndarray, kind: str, normalize: bool = False) -> np.ndarray:
    """(N, M) values from one explicit formula per pair of rows, in float64."""
    if normalize or kind == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
    out = np.empty((x.shape[0], y.shape[0]))
    for i, a in enumerate(x):
        for j, b in enumerate(y):
            if kind == "euclidean":
                out[i, j] = math.sqrt(sum((a - b) ** 2))
            elif kind == "sqeuclidean":
                out[i, j] = sum((a - b) ** 2)
            elif kind == "dot":
                out[i, j] = sum(a * b)
            else:
                out[i, j] = 1 - sum(a * b)
    return out


@pytest.mark.parametrize("name", sorted(DISTANCE_NAMES))
@given(
    rows=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5)),
    seed=st.integers(0, 2**16),
    requires_grad=st.booleans(),
)
def test_every_distance_equals_the_pairwise_formula(name, rows, seed, requires_grad) -> None:
    num_x, num_y, dim = rows
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_x, dim, dtype=torch.float64, generator=generator)
    y = torch.randn(num_y, dim, dtype=torch.float64, generator=generator)
    x.requires_grad_(requires_grad)  # with a gradient, the result is built out of place
    values = get_distance(name).pairwise(x, y)
    expected = brute_force(x.detach().numpy(), y.numpy(), name)
    assert values.shape == (num_x, num_y) and values.dtype == torch.float64
    np.testing.assert_allclose(values.detach().numpy(), expected, atol=1e-10)


@pytest.mark.parametrize("name", sorted(DISTANCE_NAMES))
@given(
    shapes=st.sampled_from(
        [
            ((3, 1), (1, 4)),  # every image's patches against every class's tokens
            ((2,), (2,)),  # matched leading dimensions
            ((2, 3), (3,)),  # y shared along the first
            ((), (2, 2)),  # x shared
        ]
    ),
    rows=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 5)),
    seed=st.integers(0, 2**16),
    requires_grad=st.booleans(),
)
def test_leading_dimensions_broadcast_as_a_loop_of_pairwise_formulas(
    name, shapes, rows, seed, requires_grad
) -> None:
    (lead_x, lead_y), (num_x, num_y, dim) = shapes, rows
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead_x, num_x, dim, dtype=torch.float64, generator=generator)
    y = torch.randn(*lead_y, num_y, dim, dtype=torch.float64, generator=generator)
    x.requires_grad_(requires_grad)
    values = get_distance(name).pairwise(x, y)
    lead = torch.broadcast_shapes(lead_x, lead_y)
    assert values.shape == (*lead, num_x, num_y) and values.dtype == torch.float64
    x_full = x.detach().expand(*lead, num_x, dim)
    y_full = y.expand(*lead, num_y, dim)
    for index in np.ndindex(*lead):
        expected = brute_force(x_full[index].numpy(), y_full[index].numpy(), name)
        np.testing.assert_allclose(values[index].detach().numpy(), expected, atol=1e-10)


def test_pairwise_is_compute_of_the_prepared_rows() -> None:
    x, y = 3 * torch.randn(2, 4, 5, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)
    for distance, normalizes in (
        (CosineDistance(), True),
        (EuclideanDistance(), False),
        (EuclideanDistance(normalize_embeddings=True), True),
        (DotProductSimilarity(), False),
        (DotProductSimilarity(normalize_embeddings=True), True),
    ):
        assert distance.normalizes == normalizes
        prepared = distance.prepare(x)
        expected_norms = torch.ones(2, 4, dtype=torch.float64) if normalizes else x.norm(dim=-1)
        torch.testing.assert_close(prepared.norm(dim=-1), expected_norms)
        assert torch.equal(distance.pairwise(x, y), distance.compute(prepared, distance.prepare(y)))


def test_gradcheck_of_the_broadcast_form() -> None:
    x = torch.randn(2, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 3, 2, 4, dtype=torch.float64, requires_grad=True)
    for distance in (CosineDistance(), EuclideanDistance(), DotProductSimilarity(True)):
        assert torch.autograd.gradcheck(distance.pairwise, (x, y))


@pytest.mark.parametrize(
    ("distance", "kind"),
    [
        (EuclideanDistance(normalize_embeddings=True), "euclidean"),
        (DotProductSimilarity(True), "dot"),
    ],
)
def test_normalised_embeddings(distance, kind) -> None:
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.randn(5, 3, dtype=torch.float64)
    expected = brute_force(x.numpy(), y.numpy(), kind, normalize=True)
    np.testing.assert_allclose(distance(x, y).numpy(), expected, atol=1e-12)


def test_only_the_similarity_is_inverted() -> None:
    assert DotProductSimilarity.is_inverted
    assert not CosineDistance.is_inverted and not EuclideanDistance.is_inverted
    x = torch.randn(3, 4)
    nearest = x[1:2] + 1e-3
    # The closest row has the smallest distance and the largest similarity.
    assert EuclideanDistance()(nearest, x).argmin() == 1
    assert DotProductSimilarity(normalize_embeddings=True)(nearest, x).argmax() == 1


def test_the_floor_keeps_the_gradient_of_coinciding_rows_finite() -> None:
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    floored = EuclideanDistance(min_squared=1e-12).pairwise(x, x)
    assert torch.allclose(floored.diagonal(), torch.full((3,), 1e-6, dtype=torch.float64))
    (gradient,) = torch.autograd.grad(floored.sum(), x)
    assert torch.isfinite(gradient).all()


def test_with_and_without_autograd_the_values_agree() -> None:
    x, y = torch.randn(20, 16), torch.randn(30, 16)
    for distance in (EuclideanDistance(), EuclideanDistance(squared=True, min_squared=1e-12)):
        with torch.no_grad():
            in_place = distance(x, y)
        out_of_place = distance(x.requires_grad_(True), y)
        x.requires_grad_(False)
        torch.testing.assert_close(out_of_place.detach(), in_place)


def test_gradcheck_of_every_distance() -> None:
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    for distance in (
        CosineDistance(),
        EuclideanDistance(),
        EuclideanDistance(squared=True),
        DotProductSimilarity(normalize_embeddings=True),
    ):
        assert torch.autograd.gradcheck(distance.pairwise, (x, y))


def test_names_objects_and_bad_input() -> None:
    assert get_distance("sqeuclidean") == EuclideanDistance(squared=True)
    assert get_distance("cosine") == CosineDistance()
    same = EuclideanDistance(min_squared=1e-12)
    assert get_distance(same) is same
    assert hash(same) == hash(EuclideanDistance(min_squared=1e-12))
    assert repr(same) == (
        "EuclideanDistance(squared=False, min_squared=1e-12, normalize_embeddings=False)"
    )
    message = (
        "metric must be a reidkit.distances.Distance or one of ('cosine', 'euclidean', "
        "'sqeuclidean', 'dot'), got 'manhattan'"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        get_distance("manhattan", "metric")
    with pytest.raises(ValueError, match="got \\['cosine'\\]"):
        get_distance(["cosine"])
    message = "x and y must have shapes (..., N, D) and (..., M, D), got (3, 4) and (3, 5)"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        CosineDistance()(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"^x and y must have shapes .* got \(4,\) and \(3, 4\)$"):
        CosineDistance()(torch.randn(4), torch.randn(3, 4))
    message = "x and y must have broadcastable leading dimensions, got (2, 3, 4) and (3, 5, 4)"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        CosineDistance()(torch.randn(2, 3, 4), torch.randn(3, 5, 4))
    with pytest.raises(ValueError, match="min_squared must be a finite number >= 0"):
        EuclideanDistance(min_squared=-1.0)


@pytest.mark.parametrize("normalize", [True, False])
def test_similarity_logits_scale_the_similarities(normalize) -> None:
    anchors = torch.randn(3, 4, dtype=torch.float64)
    targets = torch.randn(5, 4, dtype=torch.float64)
    similarity = brute_force(anchors.numpy(), targets.numpy(), "dot", normalize=normalize)
    by_temperature = similarity_logits(anchors, targets, normalize=normalize, temperature=0.07)
    np.testing.assert_allclose(by_temperature.numpy(), similarity / 0.07, atol=1e-10)
    scale = torch.tensor(20.0, dtype=torch.float64)
    by_scale = similarity_logits(anchors, targets, normalize=normalize, logit_scale=scale)
    np.testing.assert_allclose(by_scale.numpy(), similarity * 20.0, atol=1e-10)
