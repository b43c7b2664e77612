"""Text-to-image retrieval metrics (CUHK-PEDES, ICFG-PEDES, RSTPReid protocol), and a model's.

:func:`evaluate_t2i` takes the ``(T, I)`` similarities of ``T`` text queries to ``I`` gallery
images; :func:`evaluate_t2i_model` computes them for a model from the split's protocol
(:class:`~reidkit.data.TextToImageProtocol`): every gallery image and every caption is encoded
once and the similarity is the cosine of the two embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from reidkit.checks import ArrayLike
from reidkit.data import TextToImageProtocol, make_test_loader
from reidkit.data.loaders import Transform
from reidkit.distances import DotProductSimilarity
from reidkit.eval.rank import RankResult, _evaluate
from reidkit.retrieval import extract_features


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


@torch.no_grad()
def evaluate_t2i_model(
    encode_image: nn.Module | Callable[[Tensor], Tensor],
    encode_text: Callable[[Tensor], Tensor],
    protocol: TextToImageProtocol,
    image_transform: Transform,
    tokenize: Callable[[Sequence[str]], Tensor],
    device: torch.device | str = "cpu",
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    max_rank: int = 10,
) -> RankResult:
    """Text-to-image retrieval of a model on one split: R@1/5/10, mAP and mINP.

    Args:
        encode_image: ``(B, 3, H, W)`` images to ``(B, D)`` embeddings (an ``nn.Module`` is put
            in eval mode for the call); no flip averaging.
        encode_text: ``(B, L)`` token ids to ``(B, D)`` embeddings, run under
            :func:`torch.no_grad` (put its modules in eval mode first).
        protocol: the split's captions (queries) and images (gallery).
        image_transform: the test transform of the gallery images.
        tokenize: texts to ``(B, L)`` token ids.
        device: where the model runs.
        batch_size: images and captions per batch.
        num_workers: image-loading processes.
        max_rank: length of the CMC curve.

    Returns:
        :func:`evaluate_t2i` of the cosine similarities (``result.rank(1)``, ``.mAP``, ...).
    """
    loader = make_test_loader(
        protocol.gallery, [], image_transform, batch_size=batch_size, num_workers=num_workers
    )
    images = extract_features(encode_image, loader, flip=False, device=device, progress=False)
    captions = protocol.captions
    texts = torch.cat(
        [
            encode_text(tokenize(captions[start : start + batch_size]).to(device)).float().cpu()
            for start in range(0, len(captions), batch_size)
        ]
    )
    similarity = DotProductSimilarity(normalize_embeddings=True).pairwise(texts, images.features)
    return evaluate_t2i(similarity, protocol.query_pids, protocol.gallery_pids, max_rank)
