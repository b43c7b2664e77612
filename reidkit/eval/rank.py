"""Rank metrics of a retrieval distance matrix: CMC, mAP and mINP under the Market-1501 protocol.

For every query the gallery is ranked by increasing distance, with ties broken by gallery index
(the order of a stable ``argsort``). Under the Market-1501 protocol the gallery items with the
query's identity *and* camera are removed first ("junk"), and queries left without a gallery item
of their identity are skipped.

Sorting the whole ``(Q, G)`` matrix is what makes the usual implementation slow and memory-hungry
(an int64 ``argsort`` of MSMT17's 11,659 x 82,161 distances alone is 7.7 GB). None of the
metrics needs the full order, only the rank of each true match, so for a chunk of queries:

1. the ``R`` true-match distances of each query are sorted (``R`` is tiny next to ``G``);
2. every other gallery distance is placed among them with ``searchsorted``, which counts, for
   the ``k``-th match, the negatives ``n_k`` ranked before it;
3. the ``k``-th match (0-based) then has rank ``r_k = k + 1 + n_k`` among the kept items.

Work is ``O(G log R)`` per query instead of ``O(G log G)``, and memory is bounded by the chunk.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from reidkit import checks
from reidkit.checks import ArrayLike
from reidkit.eval import validation

_CHUNK_ELEMENTS = 1 << 22  # distances per chunk of queries (about 100 MB of temporaries)
_ITEMS_PER_BIN = 4  # average gallery items per histogram bin
_PAIRS_PER_STEP = 1 << 22  # (item, target) comparisons per step of the exact in-bin count


@dataclasses.dataclass(frozen=True, eq=False)  # eq would compare arrays elementwise
class RankResult:
    """Retrieval metrics averaged over the queries that have a valid match.

    Attributes:
        mAP: mean average precision, in [0, 1].
        cmc: ``(max_rank,)`` cumulative matching characteristic; ``cmc[k - 1]`` is the Rank-k
            accuracy (``cmc[0]`` is Rank-1), in [0, 1] and non-decreasing.
        mINP: mean inverse negative penalty (Ye et al., TPAMI 2021): the mean over queries of
            ``R / r_last``, the number of true matches over the rank of the hardest one.
        num_valid_queries: queries that were scored (those with at least one valid match).
        num_skipped_queries: queries that were skipped (no valid match in the gallery).
    """

    mAP: float
    cmc: np.ndarray
    mINP: float
    num_valid_queries: int
    num_skipped_queries: int = 0

    def rank(self, k: int) -> float:
        """Rank-``k`` accuracy, ``cmc[k - 1]``."""
        checks.check_integer("k", k, 1, len(self.cmc))
        return float(self.cmc[k - 1])

    def summary(self, ranks: tuple[int, ...] = (1, 5, 10)) -> str:
        """One line such as ``mAP 85.1% | mINP 60.2% | R1 94.0% | R5 98.1% | R10 98.9%``."""
        parts = [f"mAP {100 * self.mAP:.1f}%", f"mINP {100 * self.mINP:.1f}%"]
        parts += [f"R{k} {100 * self.rank(k):.1f}%" for k in ranks if k <= len(self.cmc)]
        return " | ".join(parts)


def evaluate_rank(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    *,
    chunk_size: int | None = None,
) -> RankResult:
    """CMC, mAP and mINP of ``distmat`` under the Market-1501 protocol.

    For query ``q`` the gallery items with ``g_pid == q_pid`` and ``g_camid == q_camid`` are
    removed; of the rest, those with ``g_pid == q_pid`` are its ``R`` true matches. With
    ``r_1 < ... < r_R`` their ranks among the kept items (ties in distance broken by gallery
    index, as a stable ``argsort`` orders them):

    .. math::

        AP = \\frac{1}{R}\\sum_{k=1}^{R} \\frac{k}{r_k}, \\qquad
        INP = \\frac{R}{r_R}, \\qquad CMC(m) = [\\,r_1 \\le m\\,].

    Queries with ``R = 0`` are skipped; the rest are averaged.

    Args:
        distmat: ``(Q, G)`` distances, smaller is more similar; numpy or torch, any floating
            dtype, CPU or CUDA (the computation runs where the tensor lives). Must be finite.
        q_pids, g_pids: ``(Q,)`` and ``(G,)`` identities: integers, or strings (e.g. read
            from a file list) or other hashable ids, encoded through one
            :func:`numpy.unique` of query and gallery together, so the metrics are those of
            the ids themselves. Both sides must hold the same kind of id.
        q_camids, g_camids: ``(Q,)`` and ``(G,)`` camera ids, of any kind as the identities.
        max_rank: length of the returned CMC curve. It may exceed the gallery size: a scored
            query always has its first match within the gallery, so the curve has reached 1
            by then and stays there.
        chunk_size: queries per chunk (default: about 4M distances per chunk).

    Returns:
        A :class:`RankResult`.

    Raises:
        ValueError: on malformed input, or if no query has a valid match.
    """
    return _evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, chunk_size)


def _evaluate(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike | None,
    g_camids: ArrayLike | None,
    max_rank: int,
    chunk_size: int | None,
    *,
    is_similarity: bool = False,
) -> RankResult:
    """:func:`evaluate_rank` of ``distmat``, or of ``-distmat`` when ``is_similarity``;
    ``q_camids = g_camids = None`` removes no junk (text-to-image)."""
    matrix_name = "similarity" if is_similarity else "distmat"
    distances = checks.as_matrix(matrix_name, distmat)
    num_q, num_g = distances.shape
    if num_q == 0 or num_g == 0:
        raise ValueError(f"{matrix_name} must have Q >= 1 and G >= 1, got {tuple(distances.shape)}")
    device = distances.device
    pid_names = ("text_pids", "image_pids") if is_similarity else ("q_pids", "g_pids")
    q_pids_t, g_pids_t = validation.as_paired_labels(
        pid_names, q_pids, g_pids, (num_q, num_g), device
    )
    cams = None
    if q_camids is not None and g_camids is not None:
        cams = validation.as_paired_labels(
            ("q_camids", "g_camids"), q_camids, g_camids, (num_q, num_g), device
        )
    checks.check_integer("max_rank", max_rank, 1)
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // num_g)
    checks.check_integer("chunk_size", chunk_size, 1)

    groups = IdentityGroups(q_pids_t, g_pids_t)
    is_match = groups.valid
    if cams is not None:
        q_cams_t, g_cams_t = cams
        is_match = is_match & (g_cams_t[groups.index] != q_cams_t[:, None])
    ap_sum = inp_sum = 0.0
    num_valid = 0
    first_hits = torch.zeros(max_rank + 1, dtype=torch.int64, device=device)
    for start in range(0, num_q, chunk_size):
        stop = min(start + chunk_size, num_q)
        chunk = distances[start:stop]
        if chunk.dtype not in (torch.float32, torch.float64):
            chunk = chunk.float()
        chunk = chunk.contiguous()
        if is_similarity:
            chunk = -chunk
        low, high = chunk.amin(dim=1, keepdim=True), chunk.amax(dim=1, keepdim=True)
        checks.check_finite(matrix_name, torch.cat([low, high]))  # NaN propagates to both
        if not bool(torch.isfinite(high - low).all()):  # a float32 range beyond float32
            chunk, low, high = chunk.double(), low.double(), high.double()
        ap, inp, first_rank = match_ranks(
            chunk,
            (low, high),
            groups.index[start:stop],
            groups.valid[start:stop],
            is_match[start:stop],
        )
        valid = first_rank > 0
        num_valid += int(valid.sum())
        ap_sum += float(ap.sum())
        inp_sum += float(inp.sum())
        first_hits += torch.bincount(
            first_rank[valid].clamp(max=max_rank + 1) - 1, minlength=max_rank + 1
        )
    if num_valid == 0:
        raise ValueError("no query has a valid match in the gallery; check q_pids and g_pids")
    cmc = first_hits[:max_rank].cumsum(0).double() / num_valid
    return RankResult(
        mAP=ap_sum / num_valid,
        cmc=cmc.cpu().numpy(),
        mINP=inp_sum / num_valid,
        num_valid_queries=num_valid,
        num_skipped_queries=num_q - num_valid,
    )


class IdentityGroups:
    """The gallery items of each query's identity, found without a ``(Q, G)`` comparison.

    Attributes:
        index: ``(Q, L)`` int64 gallery indices of the items with the query's identity, in
            increasing order, padded with ``0`` (``L`` is the largest such group).
        valid: ``(Q, L)`` boolean, ``False`` on padding.
    """

    def __init__(self, q_pids: Tensor, g_pids: Tensor) -> None:
        order = torch.sort(g_pids, stable=True).indices  # by identity, then gallery index
        pids, counts = torch.unique_consecutive(g_pids[order], return_counts=True)
        starts = counts.cumsum(0) - counts
        slot = torch.searchsorted(pids, q_pids).clamp(max=pids.shape[0] - 1)
        found = pids[slot] == q_pids
        sizes = torch.where(found, counts[slot], 0)
        width = max(1, int(sizes.max()))
        offsets = torch.arange(width, device=q_pids.device)
        self.valid = offsets < sizes[:, None]
        position = (starts[slot][:, None] + offsets).clamp(max=g_pids.shape[0] - 1)
        self.index = torch.where(self.valid, order[position], 0)


def match_ranks(
    dist: Tensor,
    row_range: tuple[Tensor, Tensor],
    groups_index: Tensor,
    groups_valid: Tensor,
    is_match: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-query AP, INP and first-match rank for a chunk of queries.

    Args:
        dist: ``(C, G)`` finite float32 or float64 distances.
        row_range: ``(C, 1)`` minimum and maximum of each row of ``dist``.
        groups_index: ``(C, L)`` gallery indices of the items with each query's identity
            (see :class:`IdentityGroups`), increasing along each row.
        groups_valid: ``(C, L)`` boolean, ``False`` on padding.
        is_match: ``(C, L)`` boolean, ``True`` on the true matches (valid and not junk); the
            other valid entries are junk and are removed from the ranking.

    Returns:
        float64 ``ap (C,)`` and ``inp (C,)``, and ``first_rank (C,)``: the 1-based rank of the
        first true match among the kept items, 0 for a query without a true match (whose AP
        and INP are 0).
    """
    device = dist.device
    num_c = dist.shape[0]
    num_match = is_match.sum(dim=1)
    if int(num_match.max()) == 0:
        zeros = torch.zeros(num_c, dtype=torch.float64, device=device)
        return zeros, zeros, num_match
    # Same-identity items in (distance, gallery index) order: the order of a stable argsort.
    group_dist = dist.gather(1, groups_index).masked_fill(~groups_valid, float("inf"))
    group_dist, order = torch.sort(group_dist, dim=1, stable=True)
    groups_index = groups_index.gather(1, order)
    is_match = is_match.gather(1, order)
    items_before = _count_items_before(dist, row_range, groups_index, group_dist, is_match)
    # Among the same-identity items before a match, the junk ones are removed from the ranking.
    position = torch.arange(groups_index.shape[1], device=device)
    ordinal = is_match.cumsum(dim=1)  # k: 1-based index of each match among the matches
    junk_before = position - (ordinal - is_match.long())
    ranks = (items_before - junk_before + 1).double()  # r_k among the kept items
    ap = torch.where(is_match, ordinal / ranks, 0).sum(dim=1) / num_match.clamp(min=1)
    last_rank = torch.where(is_match, ranks, 0).amax(dim=1)
    first_rank = torch.where(is_match, ranks, float("inf")).amin(dim=1)
    has_match = num_match > 0
    inp = torch.where(has_match, num_match / last_rank.clamp(min=1), 0)
    first_rank = torch.where(has_match, first_rank, 0).long()
    return ap, inp, first_rank


def _count_items_before(
    dist: Tensor,
    row_range: tuple[Tensor, Tensor],
    targets_index: Tensor,
    targets_dist: Tensor,
    is_target: Tensor,
) -> Tensor:
    """Number of gallery items ranked before each target in its query's stable ordering.

    Item ``j`` comes before target ``t`` when ``(dist[j], j) < (dist[t], t)``. The count is taken
    in two levels: a histogram of every row over ``B`` equal-width distance bins gives the items
    in earlier bins exactly (binning is monotone), and only the few items that share a bin with
    a target are compared with it directly.

    Args:
        dist: ``(C, G)`` distances; ``row_range``: ``(C, 1)`` minimum and maximum of each row.
        targets_index: ``(C, T)`` gallery indices of the targets; ``targets_dist`` their
            distances.
        is_target: ``(C, T)`` boolean; other entries get an unspecified count.

    Returns:
        ``(C, T)`` int64 counts.
    """
    num_c, num_g = dist.shape
    device = dist.device
    num_bins = max(1, num_g // _ITEMS_PER_BIN)
    low, high = row_range
    width = high.double() - low.double()
    scale = torch.where(width > 0, (num_bins - 1) / width, 0).to(dist.dtype)
    scale = torch.where(torch.isfinite(scale), scale, 0)  # a subnormal width: one bin
    # bin = floor((d - low) * scale) is in [0, num_bins - 1] up to rounding: one spare bin.
    row_start = torch.arange(num_c, device=device)[:, None] * (num_bins + 1)
    bins = (dist - low).mul_(scale).to(torch.int32).long().add_(row_start).view(-1)
    histogram = torch.bincount(bins, minlength=num_c * (num_bins + 1))
    row_first_item = torch.arange(num_c, device=device)[:, None] * num_g  # rows hold G items
    target_bins = bins.gather(0, (row_first_item + targets_index).view(-1))
    in_earlier_bins = histogram.cumsum(dim=0) - histogram  # of this row and the earlier rows
    count = in_earlier_bins.gather(0, target_bins).view(num_c, -1) - row_first_item
    # Exact comparison with the items that share a bin with a target.
    shares_bin = torch.zeros(num_c * (num_bins + 1), dtype=torch.bool, device=device)
    shares_bin[target_bins[is_target.view(-1)]] = True
    items = shares_bin.gather(0, bins).nonzero().squeeze(1)
    target_bins = target_bins.view(num_c, -1)
    pairs_per_step = max(1, _PAIRS_PER_STEP // targets_index.shape[1])
    flat_dist = dist.view(-1)
    for start in range(0, items.shape[0], pairs_per_step):
        item = items[start : start + pairs_per_step]
        row = item // num_g
        item_dist = flat_dist.take(item)[:, None]
        targets = targets_dist.index_select(0, row)
        item_index = (item - row * num_g)[:, None]
        earlier = (item_dist < targets) | (
            (item_dist == targets) & (item_index < targets_index.index_select(0, row))
        )
        before = earlier & (bins.take(item)[:, None] == target_bins.index_select(0, row))
        count.index_add_(0, row, before.long())
    return count
