"""An accumulating evaluator (query features first, then gallery), and a model's evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.checks import ArrayLike
from reidkit.distances import Distance, get_distance
from reidkit.distributed import broadcast_object, is_main_process, raise_on_every_rank
from reidkit.eval import validation
from reidkit.eval.rank import RankResult, evaluate_rank
from reidkit.eval.validation import IdArray
from reidkit.retrieval.features import extract_features
from reidkit.retrieval.reranking import rerank_from_rows

_CHUNK_ELEMENTS = 1 << 24  # distance entries computed per chunk of queries


class ReIDEvaluator:
    """Collect ``(features, pids, camids)`` batches and report :func:`reidkit.evaluate_rank`.

    The first ``num_query`` accumulated samples are the queries and the rest the gallery (the
    order of a Market-1501 test loader over ``query + gallery``).

    Args:
        num_query: number of query samples.
        metric: a :class:`~reidkit.distances.Distance` or its name (see
            :func:`~reidkit.distances.get_distance`): ``"cosine"`` (``1 - cos``, the default),
            ``"euclidean"``, ``"sqeuclidean"``, or a similarity such as ``"dot"`` (ranked by
            decreasing similarity).
        re_rank: apply k-reciprocal re-ranking (:func:`reidkit.re_ranking`) to the distances;
            the gallery-gallery distances are computed chunk by chunk, never stored. Needs a
            distance, not a similarity.
        k1, k2, lambda_value: re-ranking parameters.
        max_rank: length of the CMC curve.

    Example:
        >>> evaluator = ReIDEvaluator(num_query=len(query))
        >>> for images, pids, camids, _ in loader:
        ...     evaluator.update(model(images), pids, camids)
        >>> print(evaluator.compute().summary())
    """

    def __init__(
        self,
        num_query: int,
        metric: str | Distance = "cosine",
        *,
        re_rank: bool = False,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        max_rank: int = 50,
    ) -> None:
        checks.check_integer("num_query", num_query, 1)
        self.metric = get_distance(metric, "metric")
        if re_rank and self.metric.is_inverted:
            raise ValueError(
                f"re_rank needs a distance (smaller is closer), got the similarity {self.metric}"
            )
        checks.check_integer("max_rank", max_rank, 1)
        self.num_query = num_query
        self.re_rank = re_rank
        self.k1, self.k2, self.lambda_value = k1, k2, lambda_value
        self.max_rank = max_rank
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated batch."""
        self._features: list[Tensor] = []
        self._pids: list[IdArray] = []
        self._camids: list[IdArray] = []

    def update(self, features: ArrayLike, pids: ArrayLike, camids: ArrayLike) -> None:
        """Append a batch: ``(B, D)`` finite features, ``(B,)`` pids and ``(B,)`` camids.

        Ids are integers, or strings or other hashable ids as :func:`reidkit.evaluate_rank`
        accepts them; every batch must hold the same kind of id as the first.
        """
        batch = checks.as_matrix("features", features)
        checks.check_finite("features", batch)
        batch_pids = _ids_like("pids", pids, batch.shape[0], self._pids)
        batch_camids = _ids_like("camids", camids, batch.shape[0], self._camids)
        self._features.append(batch.float().cpu())
        self._pids.append(batch_pids)
        self._camids.append(batch_camids)

    @property
    def num_samples(self) -> int:
        """Samples accumulated so far."""
        return sum(batch.shape[0] for batch in self._features)

    def distances(self) -> Tensor:
        """``(Q, G)`` query-gallery distances (re-ranked if ``re_rank``), float32 on the CPU.

        For a similarity metric, the negated similarities.
        """
        if self.num_samples <= self.num_query:
            raise ValueError(
                f"need more than num_query={self.num_query} samples (queries then gallery), "
                f"got {self.num_samples}"
            )
        features = torch.cat(self._features)
        query, gallery = features[: self.num_query], features[self.num_query :]
        if not self.re_rank:
            step = max(1, _CHUNK_ELEMENTS // gallery.shape[0])
            distances = torch.cat(
                [
                    self.metric.pairwise(query[s : s + step], gallery)
                    for s in range(0, query.shape[0], step)
                ]
            )
            return distances.neg_() if self.metric.is_inverted else distances

        def raw_rows(start: int, stop: int) -> Tensor:
            return self.metric.pairwise(features[start:stop], features)

        return rerank_from_rows(
            raw_rows,
            query.shape[0],
            gallery.shape[0],
            self.k1,
            self.k2,
            self.lambda_value,
            None,
        )

    def compute(self) -> RankResult:
        """CMC, mAP and mINP of the accumulated queries against the accumulated gallery."""
        distances = self.distances()
        pids, camids = _concatenate(self._pids), _concatenate(self._camids)
        q = self.num_query
        return evaluate_rank(distances, pids[:q], pids[q:], camids[:q], camids[q:], self.max_rank)


def _ids_like(name: str, values: ArrayLike, length: int, earlier: list[IdArray]) -> IdArray:
    """``values`` as ids on the CPU, of the same kind as the ``earlier`` batches' ids."""
    ids = validation.as_ids(name, values, length)
    kind = validation.id_kind(ids)
    if earlier and kind != (expected := validation.id_kind(earlier[0])):
        raise ValueError(
            f"{name} must hold the same kind of id in every batch: the first batch held "
            f"{expected} ids, this one {kind} ids"
        )
    return ids.cpu() if isinstance(ids, Tensor) else ids


def _concatenate(batches: list[IdArray]) -> IdArray:
    """The ids of every batch, all of one kind (see :meth:`ReIDEvaluator.update`)."""
    tensors = [batch for batch in batches if isinstance(batch, Tensor)]
    return torch.cat(tensors) if tensors else np.concatenate(batches)


def evaluate_model(
    model: nn.Module | Callable[[Tensor], Tensor],
    loader: Iterable[Sequence[Any]],
    num_query: int,
    *,
    metric: str | Distance = "cosine",
    flip: bool = False,
    normalize: bool = False,
    re_rank: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    distributed: bool = False,
) -> RankResult:
    """Rank metrics of ``model`` on a query-then-gallery loader.

    :func:`reidkit.extract_features` over ``loader`` followed by :class:`ReIDEvaluator`: the
    evaluation loop of every example.

    Args:
        model: maps ``(B, 3, H, W)`` images to ``(B, D)`` features (put in eval mode for the
            call and restored afterwards).
        loader: yields ``(images, pids, camids[, paths])``, the ``num_query`` queries first.
        num_query: number of query images at the start of ``loader``.
        metric, re_rank: as in :class:`ReIDEvaluator`.
        flip, normalize, device, progress: as in :func:`reidkit.extract_features`.
        distributed: under ``torchrun`` (a collective: every rank calls it), each rank
            extracts the features of its share of ``loader`` (``extract_features(...,
            shard=True)``), they are gathered once, rank 0 computes the metrics and every rank
            returns them; an error on any rank is raised on every rank. Alone, it changes
            nothing. Pass the unwrapped model (no ``DistributedDataParallel``).

    Returns:
        :class:`reidkit.RankResult` (mAP, CMC, mINP).
    """
    extracted = extract_features(
        model,
        loader,
        flip,
        device,
        normalize=normalize,
        progress=progress,
        desc="Evaluating",
        shard=distributed,
    )
    result = None
    with raise_on_every_rank(distributed):
        if not distributed or is_main_process():
            evaluator = ReIDEvaluator(num_query, metric, re_rank=re_rank)
            evaluator.update(extracted.features, extracted.pids, extracted.camids)
            result = evaluator.compute()
    return cast(RankResult, broadcast_object(result) if distributed else result)
