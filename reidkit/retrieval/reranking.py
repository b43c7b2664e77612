"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017) and the k-reciprocal Jaccard distance it is built on.

For ``N`` points with original distances ``d``:

* ``N(i, k)``: the ``k + 1`` nearest points of ``i`` (itself included), and the k-reciprocal
  set ``R(i, k) = {j in N(i, k) : i in N(j, k)}`` (paper eq. 4);
* the expanded set ``R*(i, k1)``: ``R(i, k1)`` united with every ``R(c, round(k1 / 2))``,
  ``c in R(i, k1)``, that shares more than two thirds of its points with ``R(i, k1)`` (eq. 6);
* the k-reciprocal feature ``V_i``: ``V_ij = exp(-d_ij) / sum_l exp(-d_il)`` on ``R*(i, k1)``,
  zero elsewhere (eq. 7), averaged over the ``k2`` nearest points of ``i`` (local query
  expansion, eq. 10);
* the Jaccard distance ``d_J(i, j) = 1 - sum_l min(V_il, V_jl) / sum_l max(V_il, V_jl)``
  (eq. 11), with ``sum max = 2 - sum min`` because every ``V_i`` sums to one;
* re-ranking: ``d* = (1 - lambda) d_J + lambda d`` (eq. 12).

Nothing here is ``(N, N)`` except the distance rows of one chunk and the returned matrix:
neighbours come from chunked ``topk``, ``V`` is stored sparsely (about ``k2 * |R*|`` entries
per row) and ``sum_l min(V_il, V_jl)`` is accumulated through an inverted index of ``V``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor

from reidkit import checks
from reidkit.checks import ArrayLike
from reidkit.distances import EuclideanDistance

DistanceRows = Callable[[int, int], Tensor]
"""``rows(start, stop)`` returns the ``(stop - start, N)`` original distances of those points."""

_CHUNK_ELEMENTS = 1 << 22  # distance entries per chunk of rows
_PAIRS_PER_STEP = 1 << 23  # (entry, entry) products per step of the Jaccard accumulation


def k_reciprocal_jaccard_distance(
    features_or_dist: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    *,
    is_distance: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """``(N, N)`` Jaccard distance between the k-reciprocal features of ``N`` points (eq. 11).

    The distance used for clustering pseudo-labels in unsupervised ReID (e.g. DBSCAN in
    Cluster-Contrast): 0 on the diagonal, 1 between points whose expanded k-reciprocal sets do
    not meet.

    Args:
        features_or_dist: ``(N, D)`` features, whose original distance is the squared Euclidean
            ``||x_i - x_j||^2`` (``2 - 2 cos`` for L2-normalised features), or, with
            ``is_distance=True``, an ``(N, N)`` original distance matrix used as given.
            numpy or torch, CPU or CUDA; finite, with original distances that fit float32.
        k1: neighbourhood size of the k-reciprocal sets (20 in the paper, 30 in Cluster-Contrast).
        k2: neighbours averaged in the local query expansion (1 disables it).
        is_distance: see ``features_or_dist``.
        chunk_size: rows per chunk (default: about 4M distance entries per chunk).

    Returns:
        ``(N, N)`` float32 distances in [0, 1] on the input's device.
    """
    points = checks.as_matrix("features_or_dist", features_or_dist)
    checks.check_finite("features_or_dist", points)
    num = points.shape[0]
    if is_distance and points.shape[1] != num:
        raise ValueError(
            f"features_or_dist must be a square (N, N) distance matrix when is_distance=True, "
            f"got shape {tuple(points.shape)}"
        )
    if is_distance:

        def rows(start: int, stop: int) -> Tensor:
            return points[start:stop].float()

    else:
        if points.dtype in (torch.float16, torch.bfloat16):
            points = points.float()
        squared_euclidean = EuclideanDistance(squared=True)

        def rows(start: int, stop: int) -> Tensor:
            return squared_euclidean.pairwise(points[start:stop], points).float()

    chunk_size = _check_options(num, k1, k2, chunk_size)
    weights = k_reciprocal_features(rows, num, k1, k2, chunk_size)
    return torch.cat(
        [
            jaccard_rows(weights, start, min(start + chunk_size, num))
            for start in range(0, num, chunk_size)
        ]
    )


def re_ranking(
    q_g_dist: ArrayLike,
    q_q_dist: ArrayLike,
    g_g_dist: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """k-reciprocal re-ranking of query-gallery distances (Zhong et al., CVPR 2017, eq. 12).

    As in the authors' implementation, the original distance of the ``Q + G`` points is the
    square of the given distances, divided by its row maximum; the k-reciprocal sets are taken
    over queries and gallery together.

    Args:
        q_g_dist: ``(Q, G)`` query-gallery distances.
        q_q_dist: ``(Q, Q)`` query-query distances.
        g_g_dist: ``(G, G)`` gallery-gallery distances. All three must be finite, and below
            ``1.8e19`` in magnitude (their squares are taken in float32).
        k1, k2: as in :func:`k_reciprocal_jaccard_distance` (paper: 20 and 6).
        lambda_value: weight of the original distance (paper: 0.3); 1 returns the (squared,
            row-normalised) original distance, 0 the Jaccard distance alone.
        chunk_size: rows per chunk (default: about 4M distance entries per chunk).

    Returns:
        ``(Q, G)`` float32 re-ranked distances on the device of ``q_g_dist``.
    """
    q_g = checks.as_matrix("q_g_dist", q_g_dist)
    num_q, num_g = q_g.shape
    q_q = checks.as_matrix("q_q_dist", q_q_dist)
    g_g = checks.as_matrix("g_g_dist", g_g_dist)
    if q_q.shape != (num_q, num_q):
        raise ValueError(f"q_q_dist must have shape ({num_q}, {num_q}), got {tuple(q_q.shape)}")
    if g_g.shape != (num_g, num_g):
        raise ValueError(f"g_g_dist must have shape ({num_g}, {num_g}), got {tuple(g_g.shape)}")
    for name, matrix in (("q_g_dist", q_g), ("q_q_dist", q_q), ("g_g_dist", g_g)):
        checks.check_finite(name, matrix)
    device = q_g.device

    def raw_rows(start: int, stop: int) -> Tensor:
        parts = []
        if start < num_q:  # query rows: [q_q | q_g]
            q_stop = min(stop, num_q)
            parts.append(torch.cat([q_q[start:q_stop], q_g[start:q_stop]], dim=1))
        if stop > num_q:  # gallery rows: [q_g^T | g_g]
            g_start, g_stop = max(start, num_q) - num_q, stop - num_q
            parts.append(torch.cat([q_g[:, g_start:g_stop].T, g_g[g_start:g_stop]], dim=1))
        return torch.cat([part.to(device=device, dtype=torch.float32) for part in parts])

    return rerank_from_rows(raw_rows, num_q, num_g, k1, k2, lambda_value, chunk_size)


def rerank_from_rows(
    raw_rows: DistanceRows,
    num_q: int,
    num_g: int,
    k1: int,
    k2: int,
    lambda_value: float,
    chunk_size: int | None,
) -> Tensor:
    """:func:`re_ranking` of the ``Q + G`` points whose raw distance rows ``raw_rows`` gives."""
    checks.check_number("lambda_value", lambda_value, at_least=0, at_most=1)
    num = num_q + num_g
    chunk_size = _check_options(num, k1, k2, chunk_size)

    def rows(start: int, stop: int) -> Tensor:
        squared = raw_rows(start, stop).square()
        return squared / squared.amax(dim=1, keepdim=True).clamp(min=torch.finfo().tiny)

    weights = k_reciprocal_features(rows, num, k1, k2, chunk_size)
    out = []
    for start in range(0, num_q, chunk_size):
        stop = min(start + chunk_size, num_q)
        jaccard = jaccard_rows(weights, start, stop)[:, num_q:]
        out.append(torch.lerp(jaccard, rows(start, stop)[:, num_q:], lambda_value))
    return torch.cat(out)


class SparseRows:
    """A sparse ``(N, N)`` matrix stored both by rows and by columns.

    Attributes:
        row_ptr, cols, values: compressed rows (entries of row ``i`` are
            ``row_ptr[i]:row_ptr[i + 1]``, columns increasing).
        col_ptr, col_rows, col_values: the same entries compressed by columns.
    """

    def __init__(self, rows: Tensor, cols: Tensor, values: Tensor, num: int) -> None:
        """Entries ``(rows[e], cols[e])`` of value ``values[e]``; repeated entries are summed."""
        keys, inverse = torch.unique(rows * num + cols, sorted=True, return_inverse=True)
        self.values = values.new_zeros(keys.shape[0]).index_add_(0, inverse, values)
        rows, self.cols = keys // num, keys % num
        self.row_ptr = _pointers(rows, num)
        by_col = torch.argsort(self.cols * num + rows)
        self.col_rows, self.col_values = rows[by_col], self.values[by_col]
        self.col_ptr = _pointers(self.cols[by_col], num)
        self.num = num


def k_reciprocal_features(
    rows: DistanceRows, num: int, k1: int, k2: int, chunk_size: int
) -> SparseRows:
    """The k-reciprocal features ``V`` (eq. 7), after local query expansion (eq. 10)."""
    num_neighbours = min(num, max(k1 + 1, k2))
    nearest = torch.cat(
        [
            torch.topk(
                _finite_rows(rows, s, min(s + chunk_size, num)), num_neighbours, largest=False
            ).indices
            for s in range(0, num, chunk_size)
        ]
    )
    forward = nearest[:, : k1 + 1]
    half = nearest[:, : round(k1 / 2) + 1]
    is_reciprocal = _reciprocal_mask(forward)
    half_reciprocal = _reciprocal_mask(half)
    entry_rows, entry_cols, entry_values = [], [], []
    for start in range(0, num, chunk_size):
        stop = min(start + chunk_size, num)
        members, valid = _expanded_set(
            forward[start:stop], is_reciprocal[start:stop], half, half_reciprocal, num
        )
        dist = rows(start, stop).gather(1, members.clamp(max=num - 1))
        weight = torch.where(valid, torch.exp(-dist), 0)
        weight = weight / weight.sum(dim=1, keepdim=True)
        row, slot = valid.nonzero(as_tuple=True)
        entry_rows.append(row + start)
        entry_cols.append(members[row, slot])
        entry_values.append(weight[row, slot])
    weights = SparseRows(torch.cat(entry_rows), torch.cat(entry_cols), torch.cat(entry_values), num)
    if k2 == 1:
        return weights
    return _query_expansion(weights, nearest[:, :k2])


def _finite_rows(rows: DistanceRows, start: int, stop: int) -> Tensor:
    """``rows(start, stop)``, checked: finite inputs can still overflow float32 when squared."""
    distances = rows(start, stop)
    if not checks.is_finite(distances):
        raise ValueError(
            "re-ranking computes the original distances in float32 and they overflow: keep the "
            "distances below 1.8e19 (the features below about 1e19) or scale them down"
        )
    return distances


def jaccard_rows(weights: SparseRows, start: int, stop: int) -> Tensor:
    """Rows ``start:stop`` of the ``(N, N)`` Jaccard distance of ``weights`` (eq. 11).

    ``sum_l min(V_il, V_jl)`` is accumulated over the columns ``l`` where ``V_il != 0``, pairing
    each such entry with the entries ``V_jl`` of column ``l`` (the inverted index).
    """
    num, device = weights.num, weights.values.device
    first, last = int(weights.row_ptr[start]), int(weights.row_ptr[stop])
    entry_row = _expand(weights.row_ptr[start : stop + 1])  # local row of each entry
    entry_col, entry_value = weights.cols[first:last], weights.values[first:last]
    partners = (weights.col_ptr[1:] - weights.col_ptr[:-1])[entry_col]
    overlap = torch.zeros((stop - start) * num, dtype=entry_value.dtype, device=device)
    for lo, hi in _steps(partners, _PAIRS_PER_STEP):
        count = partners[lo:hi]
        pair_entry = lo + _expand(torch.cat([count.new_zeros(1), count.cumsum(0)]))
        position = weights.col_ptr[entry_col[pair_entry]] + _offsets(count)
        target = entry_row[pair_entry] * num + weights.col_rows[position]
        shared = torch.minimum(entry_value[pair_entry], weights.col_values[position])
        overlap.index_add_(0, target, shared)
    overlap = overlap.view(stop - start, num)
    return (1 - overlap / (2 - overlap)).clamp_(0, 1)


def _check_options(num: int, k1: int, k2: int, chunk_size: int | None) -> int:
    """Validate ``k1``, ``k2`` and ``chunk_size``; return the chunk size to use."""
    if num < 1:
        raise ValueError("re-ranking needs at least one point, got N = 0")
    checks.check_integer("k1", k1, 1)
    checks.check_integer("k2", k2, 1)
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // num)
    checks.check_integer("chunk_size", chunk_size, 1)
    return chunk_size


def _reciprocal_mask(neighbours: Tensor) -> Tensor:
    """``(N, K)`` boolean: is ``i`` among the neighbours of its ``m``-th neighbour (eq. 4)."""
    num, k = neighbours.shape
    step = max(1, _CHUNK_ELEMENTS // (k * k))
    masks = []
    for start in range(0, num, step):
        block = neighbours[start : start + step]
        own = torch.arange(start, start + block.shape[0], device=block.device)
        masks.append((neighbours[block] == own[:, None, None]).any(dim=-1))
    return torch.cat(masks)


def _expanded_set(
    forward: Tensor, is_reciprocal: Tensor, half: Tensor, half_reciprocal: Tensor, num: int
) -> tuple[Tensor, Tensor]:
    """The expanded sets ``R*(i, k1)`` (eq. 6) of a chunk of points.

    Args:
        forward: ``(C, K)`` neighbours ``N(i, k1)``; ``is_reciprocal``: ``(C, K)`` their
            membership of ``R(i, k1)``.
        half: ``(N, H)`` neighbours ``N(j, round(k1 / 2))`` of every point;
            ``half_reciprocal``: ``(N, H)`` their membership of ``R(j, round(k1 / 2))``.

    Returns:
        ``(C, W)`` point indices, increasing along each row, and a ``(C, W)`` boolean marking
        the members (the other entries are padding or repeats).
    """
    reciprocal = torch.where(is_reciprocal, forward, -1)
    candidate_set = half[forward]  # (C, K, H): R(c, k1/2) of each candidate c
    candidate_valid = half_reciprocal[forward] & is_reciprocal[:, :, None]
    shared = (candidate_set[..., None] == reciprocal[:, None, None, :]).any(dim=-1)
    overlap = (shared & candidate_valid).sum(dim=-1)
    size = candidate_valid.sum(dim=-1)
    # |R(c, k1/2) & R(i, k1)| > 2/3 |R(c, k1/2)|, evaluated as the authors' code does.
    accepted = overlap.double() > (2.0 / 3.0) * size.double()
    members = torch.cat(
        [
            torch.where(is_reciprocal, forward, num),
            torch.where(candidate_valid & accepted[..., None], candidate_set, num).flatten(1),
        ],
        dim=1,
    )
    members = members.sort(dim=1).values
    repeated = torch.cat(
        [torch.zeros_like(members[:, :1], dtype=torch.bool), members[:, 1:] == members[:, :-1]],
        dim=1,
    )
    return members, (members < num) & ~repeated


def _query_expansion(weights: SparseRows, neighbours: Tensor) -> SparseRows:
    """``V_i <- mean_{n in N(i, k2 - 1)} V_n`` (eq. 10) for ``(N, k2)`` neighbours."""
    row_count = weights.row_ptr[1:] - weights.row_ptr[:-1]
    source = neighbours.reshape(-1)
    count = row_count[source]
    pair = _expand(torch.cat([count.new_zeros(1), count.cumsum(0)]))  # index into ``source``
    position = weights.row_ptr[source[pair]] + _offsets(count)
    rows = pair // neighbours.shape[1]
    values = weights.values[position] / neighbours.shape[1]
    return SparseRows(rows, weights.cols[position], values, weights.num)


def _pointers(sorted_ids: Tensor, num: int) -> Tensor:
    """``(num + 1,)`` start offsets of each id's run in the sorted ``sorted_ids``."""
    counts = torch.bincount(sorted_ids, minlength=num)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _expand(pointers: Tensor) -> Tensor:
    """For run pointers ``(R + 1,)``, the run index of every element: ``(pointers[-1],)``."""
    counts = pointers[1:] - pointers[:-1]
    return torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device), counts)


def _offsets(counts: Tensor) -> Tensor:
    """``[0, 1, ..., counts[0] - 1, 0, 1, ..., counts[1] - 1, ...]``."""
    starts = counts.cumsum(0) - counts
    return torch.arange(int(counts.sum()), device=counts.device) - torch.repeat_interleave(
        starts, counts
    )


def _steps(sizes: Tensor, budget: int) -> list[tuple[int, int]]:
    """Consecutive ``[lo, hi)`` ranges of ``sizes`` whose sums stay within ``budget``
    (a single element larger than ``budget`` forms its own range)."""
    if sizes.numel() == 0:
        return []
    cumulative = sizes.cumsum(0)
    total = int(cumulative[-1])
    thresholds = torch.arange(budget, max(budget, total), budget, device=sizes.device)
    cuts = torch.searchsorted(cumulative, thresholds, right=True).tolist()
    edges = sorted({0, *cuts, sizes.shape[0]})
    return list(itertools.pairwise(edges))
