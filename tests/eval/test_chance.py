"""The chance level of the rank metrics against every order of small galleries, enumerated."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reidkit.eval import evaluate_rank
from reidkit.eval.chance import chance_rank_result


def _enumerated(q_pids, g_pids, q_cams, g_cams, max_rank):
    """Mean AP, INP and CMC over every order of each query's kept gallery: a per-query loop."""
    aps, inps, cmcs = [], [], []
    for pid, cam in zip(q_pids, q_cams):
        kept = [
            g for g, (gp, gc) in enumerate(zip(g_pids, g_cams)) if not (gp == pid and gc == cam)
        ]
        is_match = [g_pids[g] == pid for g in kept]
        if not any(is_match):
            continue
        ap = inp = 0.0
        cmc = np.zeros(max_rank)
        orders = list(itertools.permutations(is_match))
        for order in orders:
            ranks = [r + 1 for r, match in enumerate(order) if match]
            ap += np.mean([(k + 1) / r for k, r in enumerate(ranks)])
            inp += len(ranks) / ranks[-1]
            cmc[ranks[0] - 1 :] += 1
        aps.append(ap / len(orders))
        inps.append(inp / len(orders))
        cmcs.append(cmc / len(orders))
    if not aps:
        return None
    return np.mean(aps), np.mean(inps), np.mean(cmcs, axis=0), len(aps)


@st.composite
def splits(draw):
    gallery = draw(st.integers(1, 6))
    g_pids = draw(st.lists(st.integers(0, 3), min_size=gallery, max_size=gallery))
    g_cams = draw(st.lists(st.integers(0, 2), min_size=gallery, max_size=gallery))
    queries = draw(st.integers(1, 4))
    q_pids = draw(st.lists(st.sampled_from(g_pids), min_size=queries, max_size=queries))
    q_cams = draw(st.lists(st.integers(0, 2), min_size=queries, max_size=queries))
    return q_pids, g_pids, q_cams, g_cams


@given(splits(), st.integers(1, 8))
def test_the_chance_level_is_the_mean_over_every_order(split, max_rank) -> None:
    q_pids, g_pids, q_cams, g_cams = split
    enumerated = _enumerated(q_pids, g_pids, q_cams, g_cams, max_rank)
    if enumerated is None:
        with pytest.raises(ValueError, match="no query has a valid match"):
            chance_rank_result(q_pids, g_pids, q_cams, g_cams, max_rank)
        return
    mean_ap, mean_inp, cmc, valid = enumerated
    chance = chance_rank_result(q_pids, g_pids, q_cams, g_cams, max_rank)
    assert chance.mAP == pytest.approx(mean_ap, abs=1e-12)
    assert chance.mINP == pytest.approx(mean_inp, abs=1e-12)
    np.testing.assert_allclose(chance.cmc, cmc, atol=1e-12)
    assert chance.num_valid_queries == valid
    assert chance.num_skipped_queries == len(q_pids) - valid


def test_random_scores_average_to_the_chance_level() -> None:
    # A split of Market-1501's shape in small: 40 identities over 6 cameras.
    rng = np.random.default_rng(0)
    g_pids, g_cams = rng.integers(0, 40, 300), rng.integers(0, 6, 300)
    q_pids, q_cams = rng.integers(0, 40, 60), rng.integers(0, 6, 60)
    chance = chance_rank_result(q_pids, g_pids, q_cams, g_cams, max_rank=10)
    draws = [
        evaluate_rank(rng.random((60, 300)), q_pids, g_pids, q_cams, g_cams, max_rank=10)
        for _ in range(400)
    ]
    for name in ("mAP", "mINP"):
        values = np.array([getattr(result, name) for result in draws])
        error = values.std() / np.sqrt(len(values))
        assert abs(values.mean() - getattr(chance, name)) < 5 * error, name
    first = np.array([result.cmc[0] for result in draws])
    assert abs(first.mean() - chance.cmc[0]) < 5 * first.std() / np.sqrt(len(first))
    assert draws[0].num_skipped_queries == chance.num_skipped_queries


def test_text_to_image_removes_no_junk_and_one_camera_array_is_refused() -> None:
    chance = chance_rank_result([0], [0, 1, 2, 3])  # m = 1, n = 4: E[AP] = H_4 / 4
    assert chance.mAP == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    with pytest.raises(ValueError, match="both be given or both be None"):
        chance_rank_result([0], [0, 1], [0], None)
