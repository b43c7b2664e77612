"""ReIDEvaluator and evaluate_model against the functional pieces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidkit import ReIDEvaluator, evaluate_model, evaluate_rank, re_ranking
from reidkit.distances import DotProductSimilarity
from tests.retrieval.references import euclidean
from tests.retrieval.tiny_model import TinyModel, tiny_loader


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_evaluator_equals_functional_evaluation(metric: str) -> None:
    rng = np.random.default_rng(4)
    features = rng.normal(size=(40, 6)).astype(np.float32)
    pids, camids = rng.integers(0, 6, 40), rng.integers(0, 3, 40)
    evaluator = ReIDEvaluator(num_query=10, metric=metric, max_rank=20)
    for start in range(0, 40, 7):
        evaluator.update(
            features[start : start + 7], pids[start : start + 7], camids[start : start + 7]
        )
    f64 = features.astype(np.float64)
    if metric == "cosine":
        unit = f64 / np.linalg.norm(f64, axis=1, keepdims=True)
        dist = 1 - unit @ unit.T
    else:
        dist = euclidean(f64, f64)
    np.testing.assert_allclose(evaluator.distances().numpy(), dist[:10, 10:], atol=1e-5)
    labels = (pids[:10], pids[10:], camids[:10], camids[10:])
    result = evaluator.compute()
    expected = evaluate_rank(dist[:10, 10:], *labels, max_rank=20)
    assert result.mAP == pytest.approx(expected.mAP, abs=1e-6)
    np.testing.assert_allclose(result.cmc, expected.cmc)

    evaluator.re_rank = True
    reranked = re_ranking(dist[:10, 10:], dist[:10, :10], dist[10:, 10:])
    torch.testing.assert_close(evaluator.distances(), reranked, atol=1e-5, rtol=0)

    evaluator.reset()
    assert evaluator.num_samples == 0
    with pytest.raises(ValueError, match="need more than num_query=10 samples"):
        evaluator.compute()


def test_a_similarity_metric_ranks_by_decreasing_similarity() -> None:
    rng = np.random.default_rng(5)
    features = rng.normal(size=(30, 5)).astype(np.float32)
    pids, camids = rng.integers(0, 5, 30), rng.integers(0, 3, 30)
    evaluator = ReIDEvaluator(num_query=8, metric=DotProductSimilarity(), max_rank=10)
    evaluator.update(features, pids, camids)
    f64 = features.astype(np.float64)
    similarity = f64[:8] @ f64[8:].T
    np.testing.assert_allclose(evaluator.distances().numpy(), -similarity, atol=1e-5)
    result = evaluator.compute()
    by_distance = evaluate_rank(-similarity, pids[:8], pids[8:], camids[:8], camids[8:], 10)
    assert result.mAP == pytest.approx(by_distance.mAP, abs=1e-6)
    np.testing.assert_allclose(result.cmc, by_distance.cmc)


def test_evaluate_model_equals_rank_metrics_of_the_model_features() -> None:
    model = TinyModel()
    loader = tiny_loader()
    images = torch.cat([batch[0] for batch in loader])
    pids = torch.tensor([0, 1, 10, 11, 12, 20, 21, 22, 23]) % 3  # identities shared across cams
    camids = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2])
    batches = [
        (b[0], pids[s : s + len(b[0])], camids[s : s + len(b[0])])
        for b, s in zip(loader, (0, 2, 5))
    ]
    result = evaluate_model(model, batches, num_query=3, metric="euclidean", progress=False)
    features = model(images).detach().numpy()
    expected = evaluate_rank(
        euclidean(features[:3], features[3:]), pids[:3], pids[3:], camids[:3], camids[3:]
    )
    assert result.mAP == pytest.approx(expected.mAP, abs=1e-6)
    np.testing.assert_allclose(result.cmc, expected.cmc)


def test_evaluator_rejects_bad_options() -> None:
    with pytest.raises(
        ValueError,
        match=r"metric must be a reidkit\.distances\.Distance or one of \('cosine', 'euclidean', "
        r"'sqeuclidean', 'dot'\), got 'manhattan'",
    ):
        ReIDEvaluator(3, metric="manhattan")
    with pytest.raises(ValueError, match="re_rank needs a distance"):
        ReIDEvaluator(3, metric="dot", re_rank=True)
    with pytest.raises(ValueError, match="num_query"):
        ReIDEvaluator(0)
    with pytest.raises(ValueError, match=r"pids must have shape \(2,\)"):
        ReIDEvaluator(1).update(np.zeros((2, 3)), [1, 2, 3], [0, 0])
    with pytest.raises(ValueError, match="features must be finite; found NaN or inf"):
        ReIDEvaluator(1).update(np.array([[0.0, np.nan], [1.0, 2.0]]), [1, 2], [0, 0])
    evaluator = ReIDEvaluator(1)
    evaluator.update(np.zeros((2, 3)), [1, 2], [0, 0])
    with pytest.raises(
        ValueError,
        match="camids must hold the same kind of id in every batch: the first batch held "
        "integer ids, this one string ids",
    ):
        evaluator.update(np.zeros((1, 3)), [1], ["c1"])
    assert evaluator.num_samples == 2  # the rejected batch was not kept


def test_evaluator_takes_string_ids_batch_by_batch() -> None:
    rng = np.random.default_rng(7)
    features = rng.normal(size=(30, 4)).astype(np.float32)
    pids, camids = rng.integers(0, 5, 30), rng.integers(0, 3, 30)
    names = np.array(["0004", "0003", "0002", "0001", "0000"])  # reversed order
    by_name, by_integer = ReIDEvaluator(num_query=8), ReIDEvaluator(num_query=8)
    for start in range(0, 30, 7):
        rows = slice(start, start + 7)
        by_name.update(features[rows], names[pids[rows]].tolist(), [f"c{c}" for c in camids[rows]])
        by_integer.update(features[rows], pids[rows], camids[rows])
    named, expected = by_name.compute(), by_integer.compute()
    assert named.mAP == expected.mAP and named.mINP == expected.mINP
    np.testing.assert_array_equal(named.cmc, expected.cmc)
