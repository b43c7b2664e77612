"""Rank-list figures: each query followed by its top-k gallery images (MMPL Fig. 3 style)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from reidkit import checks
from reidkit.checks import ArrayLike
from reidkit.eval import validation

CORRECT_COLOUR = "#2ca02c"  # green border: same identity as the query
WRONG_COLOUR = "#d62728"  # red border: another identity


def ranked_gallery(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    query_indices: Sequence[int],
    topk: int,
) -> tuple[Tensor, Tensor]:
    """Top-``topk`` gallery indices of the given queries and whether each is a true match.

    The ranking is that of :func:`reidkit.evaluate_rank`: increasing distance, ties by gallery
    index, same-identity same-camera items removed.

    Returns:
        ``(len(query_indices), k)`` int64 gallery indices and boolean correctness, with
        ``k = min(topk, G)``; rows with fewer kept items are padded with index -1.
    """
    distances = checks.as_matrix("distmat", distmat)
    num_q, num_g = distances.shape
    device = distances.device
    lengths = (num_q, num_g)
    q_pid, g_pid = validation.as_paired_labels(
        ("q_pids", "g_pids"), q_pids, g_pids, lengths, device
    )
    q_cam, g_cam = validation.as_paired_labels(
        ("q_camids", "g_camids"), q_camids, g_camids, lengths, device
    )
    checks.check_integer("topk", topk, 1)
    rows = torch.as_tensor(list(query_indices), dtype=torch.int64, device=device)
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= num_q):
        raise ValueError(f"query_indices must lie in [0, {num_q - 1}], got {rows.tolist()}")
    k = min(topk, num_g)
    order = torch.sort(distances[rows].float(), dim=1, stable=True).indices
    junk = (g_pid[order] == q_pid[rows, None]) & (g_cam[order] == q_cam[rows, None])
    # Kept items first, each group in ranking order (a stable sort on the junk flag).
    junk_sorted, kept_first = torch.sort(junk.int(), dim=1, stable=True)
    kept = junk_sorted[:, :k] == 0
    order = torch.where(kept, order.gather(1, kept_first)[:, :k], -1)
    correct = kept & (g_pid[order.clamp(min=0)] == q_pid[rows, None])
    return order, correct


def save_rank_grid(
    distmat: ArrayLike,
    query_paths: Sequence[str | Path],
    gallery_paths: Sequence[str | Path],
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    path: str | Path,
    *,
    topk: int = 10,
    query_indices: Sequence[int] | None = None,
    image_size: tuple[int, int] = (64, 128),
) -> Path:
    """Save a PNG grid: one row per query, the query image then its top-``topk`` results.

    Results of the query's identity get a green border, others a red one; the query's border
    is black. Same-identity same-camera gallery items are skipped, as in evaluation.

    Args:
        distmat: ``(Q, G)`` distances.
        query_paths, gallery_paths: ``Q`` and ``G`` image paths.
        q_pids, g_pids, q_camids, g_camids: labels as in :func:`reidkit.evaluate_rank`.
        path: output PNG file (parent folders are created).
        topk: results per query.
        query_indices: queries to show (default: the first ``min(Q, 8)``).
        image_size: ``(width, height)`` each image is resized to.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    num_q, num_g = checks.as_matrix("distmat", distmat).shape
    if len(query_paths) != num_q or len(gallery_paths) != num_g:
        raise ValueError(
            f"query_paths and gallery_paths must have {num_q} and {num_g} entries, got "
            f"{len(query_paths)} and {len(gallery_paths)}"
        )
    if query_indices is None:
        query_indices = range(min(num_q, 8))
    query_indices = list(query_indices)
    if not query_indices:
        raise ValueError("query_indices must name at least one query")
    order, correct = ranked_gallery(
        distmat, q_pids, g_pids, q_camids, g_camids, query_indices, topk
    )
    columns = 1 + order.shape[1]
    fig, axes = plt.subplots(
        len(query_indices),
        columns,
        figsize=(1.1 * columns, 2.1 * len(query_indices)),
        squeeze=False,
    )
    for row, query in enumerate(query_indices):
        cells = [(query_paths[query], "black", "query")]
        for rank, (item, ok) in enumerate(zip(order[row].tolist(), correct[row].tolist())):
            if item >= 0:
                colour = CORRECT_COLOUR if ok else WRONG_COLOUR
                cells.append((gallery_paths[item], colour, f"{rank + 1}"))
        for column, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if column >= len(cells):
                ax.axis("off")
                continue
            image_path, colour, title = cells[column]
            with Image.open(image_path) as image:
                ax.imshow(image.convert("RGB").resize(image_size))
            ax.set_title(title, fontsize=8)
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(4)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out
