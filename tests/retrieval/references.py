"""Slow, obviously-correct references for the retrieval tests: the dense k-reciprocal
re-ranking of Zhong et al. as the authors wrote it (with stable sorts), float64 distances."""

from __future__ import annotations

import numpy as np


def k_reciprocal_jaccard_dense(original_dist: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """(N, N) Jaccard distance of the k-reciprocal features, dense, loop per point."""
    num = original_dist.shape[0]
    initial_rank = np.argsort(original_dist, axis=1, kind="stable")
    half = int(np.around(k1 / 2.0))
    weights = np.zeros_like(original_dist)
    for i in range(num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        reciprocal = forward[np.where(backward == i)[0]]
        expansion = reciprocal
        for candidate in reciprocal:
            c_forward = initial_rank[candidate, : half + 1]
            c_backward = initial_rank[c_forward, : half + 1]
            c_reciprocal = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_reciprocal, reciprocal)) > 2.0 / 3 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        weights[i, expansion] = weight / weight.sum()
    if k2 != 1:
        weights = np.stack([weights[initial_rank[i, :k2]].mean(axis=0) for i in range(num)])
    jaccard = np.zeros_like(original_dist)
    for i in range(num):
        overlap = np.minimum(weights[i][None, :], weights).sum(axis=1)
        jaccard[i] = 1 - overlap / (2 - overlap)
    return jaccard


def re_ranking_dense(
    q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int, k2: int, lambda_value: float
) -> np.ndarray:
    """The authors' re-ranking: squared distances normalised by column maximum, eq. 12."""
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64) ** 2
    original = (full / full.max(axis=0)).T
    jaccard = k_reciprocal_jaccard_dense(original, k1, k2)
    num_q = q_g.shape[0]
    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:num_q, num_q:]


def euclidean(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(M, N) Euclidean distances in float64."""
    return np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
