"""Text-to-image retrieval metrics (CUHK-PEDES, ICFG-PEDES, RSTPReid protocol)."""

from __future__ import annotations

from reidkit.checks import ArrayLike
from reidkit.eval.rank import RankResult, _evaluate


def evaluate_t2i(
    similarity: ArrayLike,
    text_pids: ArrayLike,
    image_pids: ArrayLike,
    max_rank: int = 10,
    *,
    chunk_size: int | None = None,
) -> RankResult:
    """Rank-k accuracy (R1/R5/R10), mAP and mINP of text-to-image retrieval.

    Each text query ranks every gallery image by decreasing similarity (ties broken by image
    index); an image is a true match when it shows the described identity. No image is removed
    (there are no cameras to exclude) and texts without a matching image are skipped. The
    metrics are those of :func:`reidkit.evaluate_rank` for the distance ``-similarity``:
    R@k is ``result.rank(k)``, the fraction of texts with a true match among their top k.

    Args:
        similarity: ``(T, I)`` text-image similarities (e.g. cosine), larger is more similar;
            numpy or torch, CPU or CUDA.
        text_pids: ``(T,)`` identities described by the texts.
        image_pids: ``(I,)`` identities of the gallery images (integers, strings or other
            hashable ids, as in :func:`reidkit.evaluate_rank`).
        max_rank: length of the CMC curve (10 covers R1, R5 and R10).
        chunk_size: texts per chunk (default: about 4M similarities per chunk).

    Returns:
        A :class:`reidkit.RankResult`.
    """
    return _evaluate(
        similarity, text_pids, image_pids, None, None, max_rank, chunk_size, is_similarity=True
    )
