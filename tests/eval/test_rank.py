"""evaluate_rank and evaluate_t2i against per-query numpy loops."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reidkit import RankResult, evaluate_rank, evaluate_t2i
from tests.eval.references import rank_metrics_loop


@st.composite
def retrieval_problems(draw: st.DrawFn) -> dict:
    """Small problems with shared cameras, many distance ties and some unmatched queries."""
    num_q = draw(st.integers(1, 8))
    num_g = draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    levels = draw(st.sampled_from([2, 4, 1000]))  # few levels: ties everywhere
    distmat = rng.integers(0, levels, (num_q, num_g)).astype(np.float32) / levels
    if draw(st.booleans()):
        distmat -= 0.5  # negative distances are ranked the same way
    return {
        "distmat": distmat,
        "q_pids": rng.integers(0, 5, num_q),  # pid 4 is absent from the gallery
        "g_pids": rng.integers(0, 4, num_g),
        "q_camids": rng.integers(0, 2, num_q),  # two cameras: many junk items
        "g_camids": rng.integers(0, 2, num_g),
        "max_rank": draw(st.integers(1, 40)),  # may exceed the gallery size
        "chunk_size": draw(st.integers(1, 4)),
    }


def _assert_matches_loop(result: RankResult, expected: tuple) -> None:
    mean_ap, cmc, minp, num_valid = expected
    assert result.num_valid_queries == num_valid
    assert result.mAP == pytest.approx(mean_ap, abs=1e-12)
    assert result.mINP == pytest.approx(minp, abs=1e-12)
    np.testing.assert_allclose(result.cmc, cmc, atol=1e-12)


@given(retrieval_problems())
def test_evaluate_rank_matches_per_query_loop(problem: dict) -> None:
    names = ("distmat", "q_pids", "g_pids", "q_camids", "g_camids")
    expected = rank_metrics_loop(*(problem[n] for n in names), problem["max_rank"])
    if expected[3] == 0:
        with pytest.raises(ValueError, match="no query has a valid match"):
            evaluate_rank(*(problem[n] for n in names), problem["max_rank"])
        return
    result = evaluate_rank(
        *(problem[n] for n in names), problem["max_rank"], chunk_size=problem["chunk_size"]
    )
    _assert_matches_loop(result, expected)
    assert result.cmc.shape == (problem["max_rank"],)
    assert np.all(np.diff(result.cmc) >= 0) and 0 <= result.cmc[0] <= result.cmc[-1] <= 1


def test_torch_float16_and_numpy_float64_inputs_agree() -> None:
    rng = np.random.default_rng(0)
    distmat = rng.random((20, 60))
    labels = [rng.integers(0, 6, 20), rng.integers(0, 6, 60)]
    cams = [rng.integers(0, 3, 20), rng.integers(0, 3, 60)]
    half = torch.from_numpy(distmat).half()
    from_numpy = evaluate_rank(half.double().numpy(), labels[0], labels[1], cams[0], cams[1])
    from_torch = evaluate_rank(half, *map(torch.from_numpy, (*labels, *cams)))
    assert from_torch.mAP == from_numpy.mAP and from_torch.mINP == from_numpy.mINP
    np.testing.assert_array_equal(from_torch.cmc, from_numpy.cmc)
    expected = rank_metrics_loop(half.float().numpy(), labels[0], labels[1], *cams, 50)
    _assert_matches_loop(from_torch, expected)


def test_perfect_and_reversed_rankings() -> None:
    g_pids = np.array([0, 0, 1, 1, 2, 2])
    g_cams = np.array([1, 1, 1, 1, 1, 1])
    q_pids, q_cams = np.array([0, 1, 2]), np.array([0, 0, 0])
    same = (q_pids[:, None] == g_pids[None, :]).astype(np.float64)
    perfect = evaluate_rank(1 - same, q_pids, g_pids, q_cams, g_cams, max_rank=6)
    assert perfect.mAP == 1.0 and perfect.mINP == 1.0 and perfect.cmc[0] == 1.0
    worst = evaluate_rank(same, q_pids, g_pids, q_cams, g_cams, max_rank=6)
    # matches at ranks 5 and 6: AP = (1/5 + 2/6) / 2, INP = 2/6, first hit at rank 5
    assert worst.mAP == pytest.approx((1 / 5 + 2 / 6) / 2)
    assert worst.mINP == pytest.approx(2 / 6)
    np.testing.assert_array_equal(worst.cmc, [0, 0, 0, 0, 1, 1])
    assert worst.rank(5) == 1.0 and "R1 0.0%" in worst.summary()


def test_same_camera_matches_are_junk_not_negatives() -> None:
    # The only closer item has the query's identity and camera: removed, so Rank-1 is correct.
    distmat = np.array([[0.1, 0.2, 0.3]])
    result = evaluate_rank(distmat, [7], [7, 7, 3], [0], [0, 1, 1], max_rank=3)
    assert result.mAP == 1.0 and result.num_valid_queries == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"distmat": np.zeros(5)}, "distmat must have shape"),
        ({"q_pids": np.zeros(3, dtype=int)}, r"q_pids must have shape \(2,\)"),
        ({"g_camids": np.zeros(4)}, "g_camids must hold integer or string ids, got dtype float64"),
        (
            {"g_pids": torch.zeros(4, dtype=torch.bool)},
            "g_pids must hold integer or string ids, got dtype torch.bool",
        ),
        ({"distmat": np.full((2, 4), np.nan)}, "distmat must be finite"),
        ({"max_rank": 0}, "max_rank must be an integer >= 1"),
        ({"g_pids": "0123"}, "g_pids must be a numpy array, a torch tensor"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, message: str) -> None:
    arguments = {
        "distmat": np.zeros((2, 4)),
        "q_pids": np.zeros(2, dtype=int),
        "g_pids": np.zeros(4, dtype=int),
        "q_camids": np.zeros(2, dtype=int),
        "g_camids": np.ones(4, dtype=int),
        "max_rank": 5,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        evaluate_rank(**arguments)


def _as_strings(ids: np.ndarray, seed: int) -> np.ndarray:
    """Integer ids renamed to strings by a random bijection (sorting no longer agrees)."""
    names = np.array([f"p{n:03d}" for n in np.random.default_rng(seed).permutation(1000)])
    return names[ids]


@given(retrieval_problems(), st.sampled_from(["str", "list", "object", "bytes"]))
def test_string_and_object_ids_score_as_the_integer_ids(problem: dict, form: str) -> None:
    names = ("distmat", "q_pids", "g_pids", "q_camids", "g_camids")
    ids = {n: _as_strings(problem[n], seed) for seed, n in enumerate(names[1:])}
    if form == "list":
        ids = {n: ids[n].tolist() for n in ids}
    elif form == "object":  # an object array of ids beside an array of strings
        ids["q_pids"], ids["g_camids"] = (
            ids["q_pids"].astype(object),
            ids["g_camids"].astype(object),
        )
    elif form == "bytes":
        ids = {n: ids[n].astype(bytes) for n in ids}
    arguments = [problem["distmat"], *(ids[n] for n in names[1:]), problem["max_rank"]]
    expected = rank_metrics_loop(*(np.asarray(a) for a in arguments[:5]), problem["max_rank"])
    if expected[3] == 0:
        with pytest.raises(ValueError, match="no query has a valid match"):
            evaluate_rank(*arguments)
        return
    result = evaluate_rank(*arguments, chunk_size=problem["chunk_size"])
    _assert_matches_loop(result, expected)
    with_integers = evaluate_rank(*(problem[n] for n in names), problem["max_rank"])
    assert (result.mAP, result.mINP) == (with_integers.mAP, with_integers.mINP)
    np.testing.assert_array_equal(result.cmc, with_integers.cmc)


def test_integer_tensor_ids_pair_with_object_ids() -> None:
    distmat = np.array([[0.1, 0.2, 0.3], [0.3, 0.1, 0.2]])
    q_pids = np.array([7, ("a", 1)], dtype=object)  # any hashable id
    g_pids = np.array([("a", 1), 7, 3], dtype=object)
    result = evaluate_rank(distmat, q_pids, g_pids, torch.tensor([0, 0]), np.array([1, 1, 1]))
    expected = evaluate_rank(distmat, [7, 9], [9, 7, 3], [0, 0], [1, 1, 1])
    assert result.mAP == expected.mAP == pytest.approx((1 / 2 + 1 / 3) / 2)
    object_cams = np.array([0, 0], dtype=object)
    same = evaluate_rank(distmat, [7, 9], torch.tensor([9, 7, 3]), object_cams, [1, 1, 1])
    assert same.mAP == expected.mAP


@pytest.mark.parametrize(
    ("q_pids", "g_pids", "message"),
    [
        (
            np.array([1, 2]),
            ["1", "2", "3"],
            "q_pids and g_pids must hold ids of one kind, got integer ids and string ids "
            "(no query id could equal a gallery id)",
        ),
        (
            ["a", "b"],
            np.array([b"a", b"b", b"c"]),
            "q_pids and g_pids must hold ids of one kind, got string ids and bytes ids "
            "(no query id could equal a gallery id)",
        ),
        (
            np.array([1, 2], dtype=object),  # an object array of ints is valid
            np.array([None, [1], 2], dtype=object),
            "q_pids and g_pids must hold hashable ids: unhashable type: 'list'",
        ),
        (np.array([0.5, 1.5]), [0, 1, 2], "q_pids must hold integer or string ids, got dtype"),
    ],
)
def test_ids_of_different_kinds_are_rejected(q_pids, g_pids, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate_rank(np.zeros((2, 3)), q_pids, g_pids, [0, 0], [1, 1, 1])


def test_a_string_matrix_is_rejected_with_its_name() -> None:
    with pytest.raises(
        ValueError,
        match="distmat must be a numpy array, a torch tensor or a list of numbers, got dtype <U1",
    ):
        evaluate_rank(np.array([["a"]]), [0], [0], [0], [1])


@given(st.integers(0, 2**32 - 1), st.integers(1, 12))
def test_evaluate_t2i_matches_brute_force(seed: int, max_rank: int) -> None:
    rng = np.random.default_rng(seed)
    similarity = rng.integers(-3, 4, (6, 15)).astype(np.float32)  # ties
    text_pids, image_pids = rng.integers(0, 5, 6), rng.integers(0, 4, 15)
    expected = rank_metrics_loop(-similarity, text_pids, image_pids, None, None, max_rank)
    if expected[3] == 0:
        return
    result = evaluate_t2i(torch.from_numpy(similarity), text_pids, image_pids, max_rank)
    _assert_matches_loop(result, expected)
    named = evaluate_t2i(
        similarity, _as_strings(text_pids, 0), _as_strings(image_pids, 0), max_rank
    )
    _assert_matches_loop(named, expected)
    # R@k by definition: a true match among the k most similar images (stable order).
    order = np.argsort(-similarity, axis=1, kind="stable")
    has_match = (image_pids[None, :] == text_pids[:, None]).any(axis=1)
    for k in range(1, max_rank + 1):
        hit = (image_pids[order[:, :k]] == text_pids[:, None]).any(axis=1)
        assert result.rank(k) == pytest.approx(hit[has_match].mean())


@pytest.mark.parametrize(
    "row",
    [
        [-3e38, 3e38, 0.0, 1e-44, 2e-44],  # a range that overflows float32
        [0.0, 1e-45, 1e-45, 0.0, 1e-45],  # a subnormal range
        [0.5, 0.5, 0.5, 0.5, 0.5],  # one value: the order is the gallery order
    ],
)
def test_extreme_distance_ranges(row: list[float]) -> None:
    distmat = np.array([row, row[::-1]], dtype=np.float32)
    labels = (np.array([1, 1]), np.array([1, 0, 1, 0, 1]), np.array([0, 0]), np.ones(5, int))
    expected = rank_metrics_loop(distmat, *labels, 5)
    _assert_matches_loop(evaluate_rank(distmat, *labels, max_rank=5), expected)
