"""k-reciprocal re-ranking and Jaccard distance against the dense per-point reference."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reidkit.retrieval import k_reciprocal_jaccard_distance, re_ranking, reranking
from tests.retrieval.references import euclidean, k_reciprocal_jaccard_dense, re_ranking_dense


def _split(points: np.ndarray, num_q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dist = euclidean(points, points)
    return dist[:num_q, num_q:], dist[:num_q, :num_q], dist[num_q:, num_q:]


@given(
    seed=st.integers(0, 2**32 - 1),
    num_q=st.integers(1, 6),
    num_g=st.integers(2, 30),
    k1=st.integers(1, 25),
    k2=st.integers(1, 7),
    lambda_value=st.floats(0, 1),
    chunk_size=st.integers(1, 9),
)
def test_re_ranking_matches_dense_reference(
    seed: int, num_q: int, num_g: int, k1: int, k2: int, lambda_value: float, chunk_size: int
) -> None:
    # Continuous random points: no distance ties, so every neighbour list is unambiguous.
    points = np.random.default_rng(seed).normal(size=(num_q + num_g, 4))
    q_g, q_q, g_g = _split(points, num_q)
    expected = re_ranking_dense(q_g, q_q, g_g, k1, k2, lambda_value)
    result = re_ranking(q_g, q_q, g_g, k1, k2, lambda_value, chunk_size=chunk_size)
    assert result.shape == (num_q, num_g) and result.dtype == torch.float32
    np.testing.assert_allclose(result.numpy(), expected, atol=2e-6)


def test_jaccard_accumulates_in_small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    points = np.random.default_rng(1).normal(size=(40, 3))
    expected = k_reciprocal_jaccard_dense(euclidean(points, points) ** 2, 20, 6)
    monkeypatch.setattr(reranking, "_PAIRS_PER_STEP", 7)
    result = k_reciprocal_jaccard_distance(torch.from_numpy(points), 20, 6)
    np.testing.assert_allclose(result.numpy(), expected, atol=2e-6)


def test_jaccard_distance_from_features_or_distances() -> None:
    features = torch.nn.functional.normalize(torch.randn(50, 8, dtype=torch.float64), dim=1)
    from_features = k_reciprocal_jaccard_distance(features, k1=10, k2=3)
    squared = torch.cdist(features, features) ** 2  # 2 - 2 cos
    from_distance = k_reciprocal_jaccard_distance(squared, k1=10, k2=3, is_distance=True)
    assert from_features.shape == (50, 50)
    torch.testing.assert_close(from_features, from_distance, atol=1e-5, rtol=0)
    torch.testing.assert_close(from_features, from_features.T, atol=1e-6, rtol=0)
    torch.testing.assert_close(from_features.diagonal(), torch.zeros(50), atol=1e-6, rtol=0)
    assert from_features.min() >= 0 and from_features.max() <= 1
    expected = k_reciprocal_jaccard_dense(squared.numpy(), 10, 3)
    np.testing.assert_allclose(from_features.numpy(), expected, atol=2e-6)


def test_lambda_one_returns_the_normalised_original_distance() -> None:
    points = np.random.default_rng(2).normal(size=(25, 5))
    q_g, q_q, g_g = _split(points, 5)
    result = re_ranking(q_g, q_q, g_g, lambda_value=1.0).numpy()
    squared = np.hstack([q_q, q_g]) ** 2
    np.testing.assert_allclose(result, q_g**2 / squared.max(axis=1, keepdims=True), atol=1e-6)
    # Row normalisation keeps each query's ranking.
    np.testing.assert_array_equal(np.argsort(result, axis=1), np.argsort(q_g, axis=1))


def test_re_ranking_helps_on_clustered_data() -> None:
    # Identities are tight clusters stretched along one direction: re-ranking exploits the
    # gallery-gallery structure, plain distance does not.
    from reidkit import evaluate_rank

    rng = np.random.default_rng(3)
    centres = rng.normal(scale=3.0, size=(12, 6))
    pids = np.repeat(np.arange(12), 8)
    points = centres[pids] + rng.normal(scale=2.0, size=(96, 6))
    cams = np.tile(np.arange(8), 12)
    query = cams == 0
    order = np.concatenate([np.flatnonzero(query), np.flatnonzero(~query)])
    q_g, q_q, g_g = _split(points[order], int(query.sum()))
    labels = (pids[query], pids[~query], cams[query], cams[~query])
    plain = evaluate_rank(q_g, *labels)
    reranked = evaluate_rank(re_ranking(q_g, q_q, g_g, k1=6, k2=3), *labels)
    assert reranked.mAP > plain.mAP


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: re_ranking(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 2))), "g_g_dist"),
        (lambda: re_ranking(np.zeros((2, 3)), np.zeros((3, 3)), np.zeros((3, 3))), "q_q_dist"),
        (
            lambda: re_ranking(np.ones((1, 2)), np.ones((1, 1)), np.ones((2, 2)), lambda_value=2),
            "lambda_value",
        ),
        (lambda: k_reciprocal_jaccard_distance(np.zeros((3, 2)), k1=0), "k1"),
        (lambda: k_reciprocal_jaccard_distance(np.zeros((3, 2)), is_distance=True), "square"),
    ],
)
def test_bad_arguments_are_rejected(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def _poisoned(matrix: np.ndarray, value: float = np.nan) -> np.ndarray:
    poisoned = matrix.copy()
    poisoned[-1, 0] = value
    return poisoned


_POINTS = np.random.default_rng(3).normal(size=(7, 3))
_Q_G, _Q_Q, _G_G = _split(_POINTS, 2)
_OVERFLOW = (
    "re-ranking computes the original distances in float32 and they overflow: keep the "
    "distances below 1.8e19 (the features below about 1e19) or scale them down"
)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: re_ranking(_poisoned(_Q_G), _Q_Q, _G_G),
            "q_g_dist must be finite; found NaN or inf",
        ),
        (
            lambda: re_ranking(_Q_G, _poisoned(_Q_Q), _G_G),
            "q_q_dist must be finite; found NaN or inf",
        ),
        (
            lambda: re_ranking(_Q_G, _Q_Q, _poisoned(_G_G, np.inf)),
            "g_g_dist must be finite; found NaN or inf",
        ),
        (lambda: re_ranking(_Q_G * 1e20, _Q_Q * 1e20, _G_G * 1e20), _OVERFLOW),
        (lambda: k_reciprocal_jaccard_distance(_POINTS * 1e20), _OVERFLOW),
        (
            lambda: k_reciprocal_jaccard_distance(_poisoned(_POINTS)),
            "features_or_dist must be finite; found NaN or inf",
        ),
    ],
)
def test_non_finite_or_overflowing_distances_are_rejected(call, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
