"""The chance level of rank metrics: what a uniformly random ranking scores, in closed form.

A model that ranks the gallery at random scores, in expectation, the :class:`RankResult`
:func:`chance_rank_result` returns: the floor that a trained model's numbers are read against.
It applies the protocol of :func:`reidkit.evaluate_rank` (junk removed, queries without a valid
match skipped). For a query left with ``n`` gallery items of which ``m`` are its true matches,
every order of the ``n`` items being equally likely:

.. math::

    E[AP] = \\frac{1}{n}\\Big(H_n + \\frac{m - 1}{n - 1}\\,(n - H_n)\\Big), \\qquad
    E[CMC(k)] = 1 - \\binom{n - m}{k} \\Big/ \\binom{n}{k}, \\qquad
    E[INP] = \\frac{m^2}{\\binom{n}{m}} \\sum_{r=m}^{n} \\frac{1}{r^2}\\binom{r}{m},

with ``H_n`` the ``n``-th harmonic number (``E[AP] = 1`` when ``n = 1``). AP: a true match at
rank ``r`` (uniform on ``1..n``) has, on average, ``(r - 1)(m - 1)/(n - 1)`` other true matches
before it, so its precision is ``(1 + (r - 1)(m - 1)/(n - 1)) / r``. INP: the last true match
is at rank ``r`` with probability ``C(r - 1, m - 1) / C(n, m)``. The metrics are the means of
these over the scored queries, as for a real ranking.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch

from reidkit import checks
from reidkit.checks import ArrayLike
from reidkit.eval import validation
from reidkit.eval.rank import RankResult


def chance_rank_result(
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike | None = None,
    g_camids: ArrayLike | None = None,
    max_rank: int = 50,
) -> RankResult:
    """The expected metrics of a uniformly random ranking of the gallery for every query.

    Args:
        q_pids, g_pids: ``(Q,)`` and ``(G,)`` identities, as :func:`reidkit.evaluate_rank`
            takes them.
        q_camids, g_camids: ``(Q,)`` and ``(G,)`` cameras; the gallery items of the query's
            identity and camera are removed (junk). ``None`` for both: nothing is removed
            (text-to-image).
        max_rank: length of the CMC curve.

    Returns:
        A :class:`RankResult` of expected values (``mAP``, ``mINP``, ``cmc``), with the
        numbers of scored and skipped queries of the split.

    Raises:
        ValueError: malformed labels, only one of the camera arrays, or no query with a
            valid match.
    """
    if (q_camids is None) != (g_camids is None):
        raise ValueError("q_camids and g_camids must both be given or both be None")
    checks.check_integer("max_rank", max_rank, 1)
    num_q, num_g = _length("q_pids", q_pids), _length("g_pids", g_pids)
    cpu = torch.device("cpu")
    q_ids, g_ids = validation.as_paired_labels(
        ("q_pids", "g_pids"), q_pids, g_pids, (num_q, num_g), cpu
    )
    q_labels, g_labels = q_ids.numpy(), g_ids.numpy()
    same_pid = _count_in(g_labels, q_labels)
    junk = np.zeros(num_q, dtype=np.int64)
    if q_camids is not None:
        q_cams, g_cams = validation.as_paired_labels(
            ("q_camids", "g_camids"), q_camids, cast(ArrayLike, g_camids), (num_q, num_g), cpu
        )
        cams = torch.cat([q_cams, g_cams]).numpy()
        pairs = np.stack([np.concatenate([q_labels, g_labels]), cams], 1)
        codes = np.unique(pairs, axis=0, return_inverse=True)[1].reshape(-1)
        junk = _count_in(codes[num_q:], codes[:num_q])  # gallery items of (pid, camera)
    kept, matches = num_g - junk, same_pid - junk
    valid = matches > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a valid match in the gallery; check q_pids and g_pids")
    sizes = np.stack([kept[valid], matches[valid]], 1)
    pairs, counts = np.unique(sizes, axis=0, return_counts=True)
    ap = inp = 0.0
    cmc = np.zeros(max_rank)
    for (n, m), count in zip(pairs.tolist(), counts.tolist()):
        ap += count * expected_average_precision(n, m)
        inp += count * expected_inverse_negative_penalty(n, m)
        cmc += count * expected_cmc(n, m, max_rank)
    return RankResult(
        mAP=ap / num_valid,
        cmc=cmc / num_valid,
        mINP=inp / num_valid,
        num_valid_queries=num_valid,
        num_skipped_queries=num_q - num_valid,
    )


def expected_average_precision(n: int, m: int) -> float:
    """``E[AP]`` of a random order of ``n`` items holding ``m >= 1`` true matches."""
    _check_counts(n, m)
    if n == 1:
        return 1.0
    harmonic = float(np.sum(1.0 / np.arange(1, n + 1, dtype=np.float64)))
    return (harmonic + (m - 1) / (n - 1) * (n - harmonic)) / n


def expected_cmc(n: int, m: int, max_rank: int) -> np.ndarray:
    """``(max_rank,)``: the probability that a random order of ``n`` items puts one of its
    ``m >= 1`` true matches within the first ``k`` places, for ``k = 1..max_rank``."""
    _check_counts(n, m)
    places = np.arange(max_rank, dtype=np.float64)
    # P(no match in the first k) = prod_{i<k} (n - m - i) / (n - i); zero once n - m - i = 0,
    # which comes before n - i = 0 since m >= 1.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(places < n - m, (n - m - places) / (n - places), 0.0)
    return 1.0 - np.cumprod(ratios)


def expected_inverse_negative_penalty(n: int, m: int) -> float:
    """``E[m / r_last]`` of a random order of ``n`` items holding ``m >= 1`` true matches."""
    _check_counts(n, m)
    ranks = torch.arange(m, n + 1, dtype=torch.float64)
    # log C(r, m) - log C(n, m), in float64
    log_ratio = (
        torch.lgamma(ranks + 1)
        - torch.lgamma(ranks - m + 1)
        - math.lgamma(n + 1)
        + math.lgamma(n - m + 1)
    )
    return float(m * m * torch.sum(torch.exp(log_ratio) / ranks**2))


def _check_counts(n: int, m: int) -> None:
    checks.check_integer("n", n, 1)
    checks.check_integer("m", m, 1, n)


def _length(name: str, values: ArrayLike) -> int:
    try:
        return len(values)
    except TypeError:
        raise ValueError(
            f"{name} must be a 1-D array of ids, got {type(values).__name__}"
        ) from None


def _count_in(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For every query value, how many gallery values equal it."""
    values, counts = np.unique(gallery, return_counts=True)
    position = np.searchsorted(values, queries).clip(max=len(values) - 1)
    return np.where(values[position] == queries, counts[position], 0)
