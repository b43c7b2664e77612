"""Slow, obviously-correct references for the evaluation tests: per-query numpy loops."""

from __future__ import annotations

import numpy as np


def rank_metrics_loop(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray | None,
    g_camids: np.ndarray | None,
    max_rank: int,
) -> tuple[float, np.ndarray, float, int]:
    """(mAP, CMC, mINP, valid queries), one query at a time, in float64."""
    aps, cmcs, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        keep = np.ones(order.shape[0], dtype=bool)
        if q_camids is not None:
            keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        matches = (g_pids[order] == q_pids[i])[keep]
        if not matches.any():
            continue
        hits = np.flatnonzero(matches)  # 0-based ranks of the true matches
        cmc = np.zeros(max_rank)
        cmc[hits[0] :] = 1.0
        cmcs.append(cmc)
        precision_at_hits = np.arange(1, len(hits) + 1) / (hits + 1)
        aps.append(precision_at_hits.mean())
        inps.append(len(hits) / (hits[-1] + 1))
    if not aps:
        return float("nan"), np.full(max_rank, np.nan), float("nan"), 0
    return float(np.mean(aps)), np.mean(cmcs, axis=0), float(np.mean(inps)), len(aps)
