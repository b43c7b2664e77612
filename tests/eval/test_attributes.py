"""Attribute recognition metrics against one sample and one attribute at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reidkit.eval import evaluate_attributes


def reference_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    n, m = labels.shape
    predicted = [[scores[i][j] > threshold for j in range(m)] for i in range(n)]
    balanced = []
    for j in range(m):
        positives = [i for i in range(n) if labels[i][j] == 1]
        negatives = [i for i in range(n) if labels[i][j] == 0]
        if positives and negatives:
            tpr = sum(predicted[i][j] for i in positives) / len(positives)
            tnr = sum(not predicted[i][j] for i in negatives) / len(negatives)
            balanced.append((tpr + tnr) / 2)
    accuracy = precision = recall = 0.0
    for i in range(n):
        truth = {j for j in range(m) if labels[i][j] == 1}
        guess = {j for j in range(m) if predicted[i][j]}
        both = len(truth & guess)
        accuracy += both / len(truth | guess) if truth | guess else 0.0
        precision += both / len(guess) if guess else 0.0
        recall += both / len(truth) if truth else 0.0
    accuracy, precision, recall = accuracy / n, precision / n, recall / n
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "mA": sum(balanced) / len(balanced) if balanced else float("nan"),
        "accuracy": accuracy,
        "precision": precision,
        "recall": recall,
        "F1": f1,
        "count": len(balanced),
    }


@given(
    n=st.integers(1, 12),
    m=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    threshold=st.sampled_from([0.5, 0.25]),
)
def test_metrics_match_the_loops(n: int, m: int, seed: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    # scores on a grid of 1/8 away from the thresholds: no decision at round-off level
    scores = (rng.integers(0, 8, size=(n, m)) + 0.5) / 8
    labels = rng.integers(0, 2, size=(n, m)).astype(np.uint8)
    result = evaluate_attributes(torch.from_numpy(scores), labels, threshold)
    expected = reference_metrics(scores, labels, threshold)
    for name, value in result.as_dict().items():
        assert value == pytest.approx(expected[name], nan_ok=True, abs=1e-12), name
    assert result.num_attributes == expected["count"]


def test_a_perfect_prediction_scores_one_and_labels_are_checked() -> None:
    labels = np.array([[1, 0, 1], [0, 1, 1]])
    perfect = evaluate_attributes(labels.astype(float), labels)
    assert perfect.as_dict() == {
        "mA": 1.0,
        "accuracy": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "F1": 1.0,
    }
    assert perfect.num_attributes == 2 and np.isnan(perfect.label_accuracy[2])  # all positive
    with pytest.raises(ValueError, match="labels must hold 0 and 1 only"):
        evaluate_attributes(labels.astype(float), labels * 2)
    with pytest.raises(ValueError, match="labels must have the scores' shape"):
        evaluate_attributes(labels.astype(float), labels[:, :2])
    with pytest.raises(ValueError, match="scores must be finite"):
        evaluate_attributes(np.full((2, 3), np.nan), labels)
